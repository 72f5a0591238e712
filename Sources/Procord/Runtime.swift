import CProcord

/// The one loop that drives every delegation of this process, on a thread
/// of its own (the C core's). Created on first use, never torn down: it
/// blocks in epoll when idle, so it costs nothing when unused.
final class Runtime: @unchecked Sendable {
  static let shared = Runtime()

  /// The C core's `procord_loop_t *`; only the C core touches it.
  let loop: OpaquePointer

  private init() {
    var created: OpaquePointer?
    var error = procord_loop_new(&created)
    if error == 0, let created { error = procord_loop_start_thread(created) }
    guard error == 0, let created else {
      fatalError("Procord could not start its event loop: \(String(cString: procord_strerror(error)))")
    }
    loop = created
  }
}

/// Limits that apply to every connection of this process.
public enum Limits {
  /// The largest frame body (bytes) accepted from a peer, when a connection
  /// does not set its own. Default: 64 MiB (the C core's
  /// `PROCORD_DEFAULT_MAX_MESSAGE_SIZE`); the original library had no limit,
  /// which lets any peer exhaust memory. Set it before delegating; 0 restores
  /// the default. A larger frame ends the delegation with
  /// ``ProtocolError/messageTooLong``, decided from the frame's SIZE alone.
  public static var maxMessageSize: Int {
    get { Int(procord_default_max_message_size()) }
    set { procord_set_default_max_message_size(newValue > 0 ? newValue : 0) }
  }
}
