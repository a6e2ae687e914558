"""The ``apo`` command-line application: deploy/graph over apo_bringup, demo, bench and models."""
