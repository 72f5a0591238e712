/// The soak's report as text, for a person: what ran, how each task ended,
/// memory, what was left, and the verdict.
extension SoakReport {
  func table() -> String {
    var lines = [
      "procord-bench soak, \(machine.build) build, \(machine.cores) cores, \(machine.cpu)",
      "\(fixed(duration_seconds / 60, digits: 1)) min, seed \(settings.seed), \(settings.workers) workers per pool, "
        + "\(settings.in_flight) in flight, \(settings.tasks_sent_ahead) sent ahead (local pool), "
        + "\(settings.server_tasks_sent_ahead) (server pool)",
      "tasks done: \(tasks_done) (\(formatted(tasks_per_second))/s), delegated: \(tasks_delegated)",
      "",
    ]
    let verdictNames = SoakVerdict.allCases.map(\.rawValue)
    for (title, groups, order) in [
      ("kind", by_kind, SoakKind.allCases.map(\.rawValue)), ("route", by_route, SoakRoute.allCases.map(\.rawValue)),
    ] {
      var rows = [[title] + verdictNames]
      rows += order.map { name in [name] + verdictNames.map { String(groups[name]?[$0] ?? 0) } }
      rows.append(["total"] + verdictNames.map { String(verdicts[$0] ?? 0) })
      lines += Self.aligned(rows, numericFrom: 1) + [""]
    }

    lines.append("final statuses")
    lines += Self.aligned(
      [["kind", "route", "status", "verdict", "count"]]
        + counts.map { [$0.kind, $0.route, $0.status, $0.verdict, String($0.count)] },
      numericFrom: 4)
    lines.append("")

    let mib = { (value: Double?) in value.map { fixed($0, digits: 1) } ?? "-" }
    let growth = { (value: Growth?) in
      value.map { ($0.growth_mib >= 0 ? "+" : "") + fixed($0.growth_mib, digits: 1) } ?? "-"
    }
    lines += Self.aligned(
      [["MiB", "start", "after 10%", "after 1 min", "end", "peak", "since 10%", "since 1 min", "threshold"]]
        + memory.map { memory in
          [
            memory.name, mib(memory.start_mib), mib(memory.growth_since_first_10_percent?.from_mib),
            mib(memory.growth_since_warm_up_minute?.from_mib), mib(memory.end_mib), mib(memory.peak_mib),
            growth(memory.growth_since_first_10_percent), growth(memory.growth_since_warm_up_minute),
            memory.threshold_mib.map { "+" + formatted($0) } ?? "not judged",
          ]
        }, numericFrom: 1)
    lines += Self.wrapped(thresholds, width: 100)
    lines.append("")

    lines.append("samples")
    lines += Self.aligned(
      [
        [
          "s", "moment", "tasks", "main MiB", "trimmed", "heap", "huge pages", "server MiB", "descriptors", "children",
          "server fds", "server children",
        ]
      ]
        + samples.map {
          [
            fixed($0.seconds, digits: 0), $0.moment.rawValue, String($0.tasks_done), mib($0.main_rss_mib),
            mib($0.main_rss_trimmed_mib), mib($0.main_heap_in_use_mib), mib($0.main_huge_pages_mib),
            mib($0.server_rss_mib), String($0.descriptors), String($0.children),
            $0.server_descriptors.map(String.init) ?? "-", $0.server_children.map(String.init) ?? "-",
          ]
        }, numericFrom: 2)
    lines.append("")

    let pools = [("local pool", teardown.local_pool), ("server pool", teardown.server_pool)].map { name, pool in
      "\(name): \(pool.workers_started) workers started, \(pool.tasks_delegated_by_soak) tasks delegated, "
        + "\(pool.tasks_submitted) submitted, \(pool.tasks_finished) finished, \(pool.tasks_retried) retried"
    }
    lines += pools
    lines.append(
      "server tasks still running once their clients had gone: "
        + (teardown.server_tasks_left_running.isEmpty
          ? "0" : teardown.server_tasks_left_running.joined(separator: ", ")))
    lines.append(
      "server after SIGTERM: "
        + (teardown.server_exit_status.map { "exit status \($0)" } ?? "still running, killed")
        + " after \(fixed(teardown.server_stop_seconds, digits: 2)) s")
    lines.append(
      "descriptors: \(teardown.descriptors_at_start) at start, \(teardown.descriptors_at_end) at end"
        + (teardown.descriptors_left.isEmpty && teardown.descriptors_gone.isEmpty
          ? ", the same ones" : "; left: \(teardown.descriptors_left), gone: \(teardown.descriptors_gone)"))
    lines.append(
      "child processes at end: "
        + (teardown.children_at_end.isEmpty ? "0" : teardown.children_at_end.joined(separator: ", ")))

    if !unexpected_examples.isEmpty {
      lines += ["", "first unexpected outcomes:"] + unexpected_examples.map { "  " + $0 }
    }
    if !stuck_tasks.isEmpty { lines += ["", "tasks that never finished:"] + stuck_tasks.map { "  " + $0 } }
    lines.append("")
    lines.append(passed ? "PASS" : "FAIL:\n" + problems.map { "  " + $0 }.joined(separator: "\n"))
    return lines.joined(separator: "\n")
  }

  /// `text` in lines of at most `width` characters, broken at spaces.
  private static func wrapped(_ text: String, width: Int) -> [String] {
    var lines: [String] = []
    var line = ""
    for word in text.split(separator: " ") {
      if !line.isEmpty && line.count + 1 + word.count > width {
        lines.append(line)
        line = ""
      }
      line += (line.isEmpty ? "" : " ") + word
    }
    return line.isEmpty ? lines : lines + [line]
  }

  /// Rows as columns padded to their widest cell; columns from
  /// `numericFrom` on are aligned right.
  private static func aligned(_ rows: [[String]], numericFrom: Int) -> [String] {
    let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
    return rows.map { row in
      row.indices.map { column -> String in
        let cell = row[column]
        let pad = String(repeating: " ", count: widths[column] - cell.count)
        return column >= numericFrom ? pad + cell : cell + pad
      }.joined(separator: "  ").trimmingTrailingSpaces()
    }
  }
}
