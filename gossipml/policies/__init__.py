"""Pure decisions of a peer: who its neighbours are (topology), when it goes on (pacing), emulated
links and stragglers, Byzantine attacks and the membership protocol. No sockets, threads or
clocks: every time is passed in."""
