"""Benchmark harness for NegGuide (not tests: it prints ratios, it asserts nothing).

``bench/run.py`` is the command line; ``bench/timing.py`` times variants against a baseline in one
process; ``bench/models.py`` builds "real width, reduced depth" models from ComfyUI's own classes;
``bench/cases.py`` is the registry of what to compare. See bench/README.md.

Importing this package does not import ComfyUI: ``bench/_pack.py`` boots the host first.
"""
