"""The node runtime: claiming (producer), running (executor), storing outcomes (acker), hearing
NOTIFY (notifier), job telemetry. Wired together by :mod:`bridge.jobs.node`."""
