#!/usr/bin/env bash
# Container entrypoint. The pyspark wheel has no Kubernetes entrypoint of its own, so this one
# starts executors: Spark launches executor pods with the single argument "executor" and
# describes the executor in SPARK_* environment variables. "driver" (cluster mode) runs
# spark-submit in client mode inside the pod. Anything else (the CronJob's command) runs as given.
set -euo pipefail

case "${1:-}" in
  executor)
    # JVM options from the driver arrive as SPARK_JAVA_OPT_0, _1, ...; keep their order.
    mapfile -t java_opts < <(env | grep -E '^SPARK_JAVA_OPT_[0-9]+=' | sort -t_ -k4 -n | cut -d= -f2-)
    exec tini -s -- "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$SPARK_CONF_DIR:$SPARK_HOME/jars/*${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  driver)
    shift
    exec tini -s -- spark-submit --deploy-mode client \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:-0.0.0.0}" "$@"
    ;;
  *)
    exec tini -s -- "$@"
    ;;
esac
