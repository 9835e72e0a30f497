"""Communication: the one thread that owns a peer's sockets (transport), what it knows of its
neighbours (mailbox), snapshots handed to it, the same-host shared-memory path, CURVE and
addresses. Import the modules themselves; this package imports nothing (so reading a config that
names ``comm.config`` never imports zmq)."""
