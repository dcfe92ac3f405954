"""Shadow rollouts: the live evidence on champion and shadow (`evidence`) and the pure decision on it (`decision`)."""
