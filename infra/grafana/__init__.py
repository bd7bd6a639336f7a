"""Grafana provisioning of Pantheon: dashboards (generated from ``dashboards.py``) and files."""
