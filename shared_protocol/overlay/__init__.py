"""The core overlay of proxies: PolderCast (CYCLON + VICINITY + Rings) with
RingCast-style relay-free dissemination, Bloom-filter profiles (optionally
BLIP-randomised) and URPS in front of CYCLON's input. See docs/overlay.md."""
