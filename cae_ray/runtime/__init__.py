"""Ray: the cluster, the wide Parquet data path (packed splits, statistics, batches), the
selector's Ray Train driver and worker function, and the gate's gradient-boosted trees on Ray
(XGBoost)."""
