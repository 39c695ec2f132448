"""``fer2neuro interop``: a NIR graph run by the peer NIR tools' own importers
and simulators beside fer2neuro's targets, and where they disagree, why
(peers.py reaches the peers, compare.py and causes.py judge, report.py
writes)."""
