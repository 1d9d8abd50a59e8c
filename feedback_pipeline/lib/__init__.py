"""Plain Python on DataFrames and typed settings; nothing here imports dagster."""
