"""Runner scripts, one per peer, each run with that peer's own Python
(protocol.py). They import nothing of fer2neuro."""
