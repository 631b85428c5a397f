# Run by the postgres image's entrypoint on first start of a primary
# (mounted into /docker-entrypoint-initdb.d/): the image's pg_hba.conf
# allows replication connections from localhost only, and the replicas
# pg_basebackup and stream from other containers.
echo "host replication all all trust" >> "$PGDATA/pg_hba.conf"
