"""digitflow tasks: one module per step, each a plain-function core plus a thin Prefect task."""
