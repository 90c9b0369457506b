"""Prefect wiring only: flows, tasks that call stage functions, artifacts, deployments.

No business logic lives here; every task is a thin call into a stage package.
"""
