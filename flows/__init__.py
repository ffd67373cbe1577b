"""digitflow flows: short stories of task calls, plus the `digitflow` console script."""
