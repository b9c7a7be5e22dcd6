"""The monitoring pack: Prometheus rules, an Alertmanager example and Grafana dashboards
generated from one config.

``streamobs pack --out DIR`` (or ``python -m streamobs.pack``) writes
``alerts/streamobs.rules.yml``, ``alerts/alertmanager.example.yml``,
``deploy/kubernetes/prometheusrule.yaml`` and ``dashboards/*.json``; ``--config`` writes
them for the targets and SLOs of a streamobs config, ``--check`` fails when a file is
stale. The SLOs are streamobs' own (:mod:`streamobs.config`); every other threshold,
window, severity and selector lives in ``config.py``, so a threshold cannot disagree
between an alert and a panel.
"""
