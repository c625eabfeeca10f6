"""Ray: the cluster, the wide Parquet data path (prepare, packed splits, batches) and the
select step's Ray Train driver and worker function."""
