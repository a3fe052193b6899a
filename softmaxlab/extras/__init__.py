"""Optional integrations, installed as extras and imported only when chosen: Ray sweeps, MLflow/TensorBoard."""
