"""Deterministic synthetic workload: a world of users, boards and pins, their images and sessions.

`population` builds the world cheaply (no images); `images` renders pin photos; `pins` and
`sessions` turn the world into pin-creation and interaction records; `jsonl` writes them.
"""
