// procord-test-worker: a worker that misbehaves on purpose (filled in by the tests' author).
import Procord
try Worker.runIfRequested(tasks: [])
