"""The Dagster side: assets, resources, jobs, schedules, sensors, the component and the factory.

Everything that imports Dagster lives here; the engine (``erzy_pipelines.sync``) runs without it.
"""
