"""The monitoring pack: Prometheus rules and Grafana dashboards generated from one config.

``python -m streamobs.pack`` writes ``alerts/streamobs.rules.yml`` and ``dashboards/*.json``
from :data:`streamobs.pack.config.DEFAULT`; ``--check`` fails when a checked-in file is
stale. Objectives, thresholds, windows, burn factors, severities and selectors live in
``config.py`` only, so a threshold cannot disagree between an alert and a panel.
"""
