#!/usr/bin/env bash
# Run one recs step (or the whole night) on a cluster with spark-submit.
#
# It ships the Python environment (a packed venv/conda env with `recs` installed), adds
# Delta Lake, loads deploy/spark-defaults.conf and passes the job arguments through.
# Run `deploy/spark-submit.sh --help` for the variables it reads.
#
# Wrapper settings deliberately do NOT use the RECS_ prefix: every RECS_* variable in the
# driver's environment is parsed as a config override (recs/config.py), and an unknown key
# there fails the job at start-up.
#
# Portable to bash 3.2+ (Amazon Linux 2, EMR 5/6, macOS): arrays that may be empty are
# expanded as ${a[@]+"${a[@]}"}, which `set -u` accepts before bash 4.4 too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
# The steps are the jobs/ scripts (one per step of recs.pipeline.STEPS, plus nightly).
STEPS=$(cd "$ROOT/jobs" && for f in [a-z]*.py; do printf '%s ' "${f%.py}"; done)
readonly STEPS

usage() {
  cat <<EOF
usage: deploy/spark-submit.sh STEP --date YYYY-MM-DD [--config FILE] [--lakehouse URI] [--raw URI] [--force]
       deploy/spark-submit.sh fetch-jars DIR

STEP is one of: $STEPS  (runs jobs/STEP.py; --force is for nightly only)

example:
  deploy/spark-submit.sh nightly --date 2026-01-14 \\
      --lakehouse s3://example-bucket/recs --raw s3a://example-bucket/raw

environment:
  SPARK_MASTER            master URL (default: yarn; e.g. k8s://https://HOST:443,
                          spark://HOST:7077, local[4])
  DEPLOY_MODE             client | cluster (default: client). In client mode the driver, and
                          so model training, runs on this machine. Standalone masters
                          (spark://) run Python applications in client mode only.
  DRY_RUN=1               print the spark-submit command instead of running it (never packs)
  SPARK_SUBMIT            spark-submit to use (default: \$SPARK_HOME/bin/spark-submit, else PATH)
  DEPLOY_VENV             environment to ship (default: \$VIRTUAL_ENV, \$CONDA_PREFIX, or ./.venv);
                          it must have recs installed non-editable: pip install .
  DEPLOY_SHIP_ENV         1: pack and ship DEPLOY_VENV with --archives; 0: the nodes already have
                          the environment (container image). Default: 0 for k8s:// and local
                          masters, 1 otherwise. In client mode, ingest, features and evaluate
                          ship nothing: their executors run no Python (only score and train do)
  DEPLOY_ENV_ARCHIVE      use this prebuilt env archive (local path or hdfs:// / s3a:// URI)
                          instead of packing one
  DEPLOY_ENV_STORE        folder on storage every node reads (hdfs://, s3a://, a shared path)
                          that keeps one archive per build of recs: an archive already there
                          is reused without packing or uploading; a new one is uploaded once.
                          Default: LAKEHOUSE/_deploy/envs when --lakehouse is a URI with a
                          scheme (hdfs://, s3://, ...); "none" ships the local archive instead
  DEPLOY_ENV_CACHE        where packed archives are cached (default: ~/.cache/recs-deploy)
  DEPLOY_PYTHON           with DEPLOY_SHIP_ENV=0: the Python on the nodes (default: Spark's choice)
  DEPLOY_PROPERTIES_FILE  properties file (default: deploy/spark-defaults.conf); the cluster's
                          own conf/spark-defaults.conf is still loaded underneath it
  DEPLOY_DELTA_PACKAGE    Delta's Maven coordinates (default: the ones matching the shipped
                          environment's delta-spark and pyspark, from recs.session)
  DEPLOY_JARS_DIR         a folder of pre-fetched JARs (Delta and its dependencies) to ship with
                          --jars instead of resolving --packages from Maven: for clusters
                          without Maven access (fill it once with deploy/fetch-jars.sh)
  DEPLOY_EXTRA_PACKAGES   extra Maven coordinates, comma-separated (e.g. hadoop-aws)
  DEPLOY_SUBMIT_ARGS      extra spark-submit options, split on whitespace
                          (e.g. "--conf spark.executor.instances=8 --queue recs")

In cluster mode, RECS_* config overrides set here are forwarded to the driver, and a
--config FILE is shipped with --files.
EOF
}

die() { echo "spark-submit.sh: $*" >&2; exit 2; }
note() { echo "spark-submit.sh: $*" >&2; }

venv=${DEPLOY_VENV:-${VIRTUAL_ENV:-${CONDA_PREFIX:-$ROOT/.venv}}}
venv_python=$venv/bin/python

if [[ -n ${SPARK_SUBMIT:-} ]]; then
  submit=$SPARK_SUBMIT
elif [[ -n ${SPARK_HOME:-} ]]; then
  submit=$SPARK_HOME/bin/spark-submit
else
  submit=spark-submit
fi

# --- Delta Lake's JARs: one source for the version, recs.session.delta_package() ----------
delta_package() {
  if [[ -n ${DEPLOY_DELTA_PACKAGE:-} ]]; then
    echo "$DEPLOY_DELTA_PACKAGE"
    return
  fi
  local py
  # The environment that runs the job knows its own pyspark and delta-spark versions.
  for py in "$venv_python" "${DEPLOY_PYTHON:-}" python3; do
    if [[ -n $py ]] && command -v "$py" >/dev/null &&
      "$py" -I -c 'from recs.session import delta_package as d; print(d())' 2>/dev/null; then
      return
    fi
  done
  die "cannot tell which Delta JARs match: recs is not installed at $venv, ${DEPLOY_PYTHON:-DEPLOY_PYTHON} or python3 (set DEPLOY_VENV, or DEPLOY_DELTA_PACKAGE=io.delta:delta-spark_<spark>_2.13:<version>)"
}
# Dependencies of Delta that Spark already ships in its jars/ folder: resolving them again
# would put a second, older Hadoop / Jackson / Parquet on the classpath.
readonly SPARK_PROVIDED="org.apache.hadoop:hadoop-client-api,org.apache.hadoop:hadoop-client-runtime,\
com.fasterxml.jackson.core:jackson-core,com.fasterxml.jackson.core:jackson-databind,\
com.fasterxml.jackson.core:jackson-annotations,org.apache.parquet:parquet-hadoop,\
org.apache.parquet:parquet-column,org.apache.parquet:parquet-common,org.apache.parquet:parquet-encoding,\
org.apache.parquet:parquet-format-structures,org.apache.parquet:parquet-jackson,org.slf4j:slf4j-api,\
org.apache.logging.log4j:log4j-api,org.apache.logging.log4j:log4j-core,\
org.apache.logging.log4j:log4j-slf4j2-impl,org.xerial.snappy:snappy-java,com.github.luben:zstd-jni,\
io.airlift:aircompressor"

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h | --help | help) usage; exit 0 ;; esac

# fetch-jars DIR: Delta's JARs (less what Spark ships) into DIR, for DEPLOY_JARS_DIR.
if [[ $1 == fetch-jars ]]; then
  [[ $# -eq 2 ]] || die "usage: deploy/spark-submit.sh fetch-jars DIR"
  out=$2
  ivy=$(mktemp -d)
  trap 'rm -rf "$ivy"' EXIT
  echo "pass" >"$ivy/resolve_only.py"
  "$submit" --master "local[1]" --conf "spark.jars.ivy=$ivy" --conf spark.ui.enabled=false \
    --packages "$(delta_package)" --exclude-packages "$SPARK_PROVIDED" "$ivy/resolve_only.py" >&2
  mkdir -p "$out"
  cp "$ivy"/jars/*.jar "$out"/
  note "$(ls "$ivy"/jars/*.jar | wc -l | tr -d ' ') JARs in $out; ship them with DEPLOY_JARS_DIR=$out"
  exit 0
fi

step=$1
shift
[[ " $STEPS " == *" $step "* ]] || die "unknown step '$step' (steps: $STEPS)"
job="$ROOT/jobs/$step.py"
[[ -f $job ]] || die "$job not found"
[[ -f $ROOT/jobs/_entry.py ]] || die "$ROOT/jobs/_entry.py not found"

master=${SPARK_MASTER:-yarn}
mode=${DEPLOY_MODE:-client}
[[ $mode == client || $mode == cluster ]] || die "DEPLOY_MODE must be client or cluster, not '$mode'"
if [[ $mode == cluster && $master == spark://* ]]; then
  die "a standalone master ($master) cannot run Python applications in cluster deploy mode; use DEPLOY_MODE=client (the driver runs here) or YARN / Kubernetes"
fi
if [[ $mode == cluster && $master == local* ]]; then
  die "cluster deploy mode needs a cluster master, not $master; use DEPLOY_MODE=client"
fi
dry_run=${DRY_RUN:-0}
props=${DEPLOY_PROPERTIES_FILE:-$HERE/spark-defaults.conf}
[[ -f $props ]] || die "properties file $props not found"

case "$master" in
  k8s://* | local*) ship=${DEPLOY_SHIP_ENV:-0} ;;
  *) ship=${DEPLOY_SHIP_ENV:-1} ;;
esac

# --- the job's own arguments: find the date (for the app name) and ship --config in cluster mode
job_args=()
files=()
run_date=""
lakehouse=""
while [[ $# -gt 0 ]]; do
  arg=$1
  shift
  case "$arg" in
    --date) run_date=${1:-}; job_args+=("$arg" "${1:-}"); shift || true ;;
    --date=*) run_date=${arg#--date=}; job_args+=("$arg") ;;
    --lakehouse) lakehouse=${1:-}; job_args+=("$arg" "${1:-}"); shift || true ;;
    --lakehouse=*) lakehouse=${arg#--lakehouse=}; job_args+=("$arg") ;;
    --config | --config=*)
      if [[ $arg == --config ]]; then cfg_file=${1:-}; shift || true; else cfg_file=${arg#--config=}; fi
      if [[ $mode == cluster ]]; then
        # The driver runs on a cluster node: ship the file next to it and refer to it by name.
        files+=("$cfg_file")
        job_args+=(--config "$(basename "$cfg_file")")
      else
        job_args+=(--config "$cfg_file")
      fi
      ;;
    *) job_args+=("$arg") ;;
  esac
done
[[ -n $run_date ]] || die "--date YYYY-MM-DD is required (every run names its date explicitly)"

# --- the Python environment ----------------------------------------------------------------
# Cache key: pyproject.toml + the installed recs version + its RECORD (file hashes of the
# installed package), so a code change reinstalled without a version bump still repacks.
# -I: look only inside the venv (not at a recs checkout in the current directory).
env_key() {
  "$venv_python" -I - "$ROOT/pyproject.toml" <<'PY'
import hashlib, sys
from importlib import metadata

dist = metadata.distribution("recs")
digest = hashlib.sha256(open(sys.argv[1], "rb").read())
digest.update(dist.version.encode())
digest.update((dist.read_text("RECORD") or "").encode())
print(f"{dist.version}-{digest.hexdigest()[:16]}")
PY
}

installed_editable() {
  "$venv_python" -I - <<'PY'
import json, sys
from importlib import metadata

url = metadata.distribution("recs").read_text("direct_url.json")
sys.exit(0 if url and json.loads(url).get("dir_info", {}).get("editable") else 1)
PY
}

pack_env() { # pack_env OUTPUT
  local out=$1 tool
  if installed_editable; then
    die "recs is installed editable in $venv; packed envs cannot carry that. Run: $venv_python -m pip install $ROOT"
  fi
  if [[ -d $venv/conda-meta ]]; then
    tool=$(command -v conda-pack || true)
    [[ -n $tool ]] || die "$venv is a conda env but conda-pack is not installed (conda install conda-pack)"
  else
    # A packed venv holds only its own site-packages (and links to, not copies of, the base
    # interpreter: every node needs that Python at the same path; conda-pack ships one).
    if grep -qiE '^include-system-site-packages *= *true' "$venv/pyvenv.cfg" 2>/dev/null; then
      die "$venv uses --system-site-packages; executors would miss those packages. Recreate it without."
    fi
    if [[ -x $venv/bin/venv-pack ]]; then tool=$venv/bin/venv-pack; else tool=$(command -v venv-pack || true); fi
    [[ -n $tool ]] || die "venv-pack is not installed. Either: $venv_python -m pip install venv-pack;
  or build an archive yourself and set DEPLOY_ENV_ARCHIVE; or, when every node already has the
  environment (e.g. the container image), set DEPLOY_SHIP_ENV=0."
  fi
  mkdir -p "$(dirname "$out")"
  partial="$(dirname "$out")/.partial-$$-$(basename "$out")"  # venv-pack wants a .tar.gz name
  trap 'rm -f "$partial"' EXIT
  note "packing $venv into $out (once per recs build) with $(basename "$tool")"
  "$tool" -p "$venv" -o "$partial" >&2
  mv -f "$partial" "$out"
  trap - EXIT
}

# --- the archive store: one archive per build of recs, on storage every node reads -----------
# A store archive is localised by YARN from the cluster's own storage (and kept in the node
# manager's cache across applications) instead of being uploaded from here for every run.
store=${DEPLOY_ENV_STORE:-}
store_explicit=1
if [[ -z $store ]]; then
  store_explicit=0
  if [[ $lakehouse == *://* && $lakehouse != file:* ]]; then store=${lakehouse%/}/_deploy/envs; fi
fi
[[ $store != none ]] || store=""

hadoop_cli() {
  if [[ -n ${HADOOP_HOME:-} && -x $HADOOP_HOME/bin/hadoop ]]; then echo "$HADOOP_HOME/bin/hadoop"; else command -v hadoop || true; fi
}
store_local_path() { # a plain or file: path, else nothing
  case "$1" in
    file://*) echo "${1#file://}" ;;
    file:*) echo "${1#file:}" ;;
    *://*) ;;
    *) echo "$1" ;;
  esac
}
store_has() { # store_has URI
  local path tool
  path=$(store_local_path "$1")
  if [[ -n $path ]]; then [[ -f $path ]]; return; fi
  tool=$(hadoop_cli)
  [[ -n $tool ]] || return 2
  "$tool" fs -test -e "$1" 2>/dev/null
}
store_put() { # store_put LOCAL URI: upload under a temporary name, then rename (atomic for readers)
  local path tool tmp
  path=$(store_local_path "$2")
  tmp="$(dirname "$2")/.partial-$$-$(basename "$2")"
  if [[ -n $path ]]; then
    mkdir -p "$(dirname "$path")" && cp "$1" "$(store_local_path "$tmp")" && mv -f "$(store_local_path "$tmp")" "$path"
    return
  fi
  tool=$(hadoop_cli)
  [[ -n $tool ]] || return 2
  "$tool" fs -mkdir -p "$(dirname "$2")" && "$tool" fs -put -f "$1" "$tmp" && "$tool" fs -mv "$tmp" "$2"
}
store_failed() { # store_failed MESSAGE: fatal for a store the user named, a note for the default
  if [[ $store_explicit == 1 ]]; then die "DEPLOY_ENV_STORE=$store: $1"; fi
  note "env store $store: $1; shipping the local archive (DEPLOY_ENV_STORE=none silences this)"
  store=""
}

# Executors run Python only to rank (score) and for data-parallel training ranks (train). In
# client mode the other steps need the environment on this machine alone, not on the nodes.
if [[ $ship == 1 && $mode == client && " ingest features evaluate " == *" $step "* ]]; then
  ship=0
  # The driver still runs here from the environment; the executors' Python is never started.
  [[ -n ${DEPLOY_PYTHON:-} || ! -x $venv_python ]] || driver_python=$venv_python
fi

conf=()
submit_env=()
if [[ $ship == 1 ]]; then
  if [[ -n ${DEPLOY_ENV_ARCHIVE:-} ]]; then
    archive=$DEPLOY_ENV_ARCHIVE
    [[ $archive == *://* || -f $archive ]] || die "DEPLOY_ENV_ARCHIVE=$archive does not exist"
  elif [[ -x $venv_python ]]; then
    cache=${DEPLOY_ENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/recs-deploy}
    if ! key=$(env_key 2>/dev/null); then
      [[ $dry_run == 1 ]] || die "recs is not installed in $venv (run: $venv_python -m pip install $ROOT)"
      note "dry run: recs is not installed in $venv; showing a placeholder archive"
      key="<not-installed>"
    fi
    archive=$cache/recs-env-$key.tar.gz
    stored=""
    if [[ -n $store ]]; then
      stored=${store%/}/recs-env-$key.tar.gz
      store_has "$stored" && found=0 || found=$?
      if [[ $found == 0 ]]; then
        note "reusing $stored"
        archive=$stored
        stored=""
      elif [[ $found == 2 ]]; then
        store_failed "no hadoop command to reach it (set HADOOP_HOME or put hadoop on PATH)"
        stored=""
      fi
    fi
    if [[ $archive != *://* && ! -f $archive ]]; then
      if [[ $dry_run == 1 ]]; then
        note "dry run: $archive is not packed yet; a real run packs it first"
      else
        if command -v flock >/dev/null; then
          # Two launches at once (e.g. a backfill and a manual run) must not both pack.
          mkdir -p "$cache"
          exec 9>"$archive.lock"
          flock 9
        fi
        [[ -f $archive ]] || pack_env "$archive"
        exec 9>&- # release the lock now, not when spark-submit ends
      fi
    fi
    if [[ -n $stored ]]; then
      if [[ $dry_run == 1 ]]; then
        note "dry run: a real run uploads $archive to $stored"
        archive=$stored
      elif store_put "$archive" "$stored"; then
        note "uploaded $archive to $stored (later runs of this build reuse it)"
        archive=$stored
      else
        store_failed "could not upload $stored"
      fi
    fi
  elif [[ $dry_run == 1 ]]; then
    note "dry run: no environment at $venv (set DEPLOY_VENV); showing a placeholder archive"
    archive="<packed-env-of-$venv>.tar.gz"
  else
    die "no Python environment at $venv: create one (python -m venv .venv && .venv/bin/pip install . venv-pack) or set DEPLOY_VENV / DEPLOY_ENV_ARCHIVE"
  fi
  # Executors (and a cluster-mode driver) run the unpacked archive's interpreter.
  conf+=(--archives "$archive#environment" --conf spark.pyspark.python=./environment/bin/python)
  if [[ $mode == client ]]; then
    if [[ ! -x $venv_python && $dry_run != 1 ]]; then
      die "client mode runs the driver here, from the shipped environment: set DEPLOY_VENV to it"
    fi
    # The driver runs here, from the environment that was packed, not from the archive.
    # The conf wins over spark.pyspark.python for the driver; the env var is for tools that read it.
    conf+=(--conf "spark.pyspark.driver.python=$venv_python")
    submit_env+=("PYSPARK_DRIVER_PYTHON=$venv_python")
  else
    conf+=(--conf spark.pyspark.driver.python=./environment/bin/python)
    if [[ $master == yarn* ]]; then
      conf+=(--conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=./environment/bin/python)
    fi
    submit_env+=(-u PYSPARK_DRIVER_PYTHON)
  fi
elif [[ -n ${DEPLOY_PYTHON:-} ]]; then
  conf+=(--conf "spark.pyspark.python=$DEPLOY_PYTHON" --conf "spark.pyspark.driver.python=$DEPLOY_PYTHON")
elif [[ -n ${driver_python:-} ]]; then
  conf+=(--conf "spark.pyspark.driver.python=$driver_python")
fi

# --- config overrides for a driver that does not run here -----------------------------------
if [[ $mode == cluster ]]; then
  while IFS='=' read -r name value; do
    [[ $name == RECS_CONFIG ]] && { note "RECS_CONFIG is not forwarded in cluster mode; pass --config FILE"; continue; }
    case "$master" in
      yarn*) conf+=(--conf "spark.yarn.appMasterEnv.$name=$value") ;;
      k8s://*) conf+=(--conf "spark.kubernetes.driverEnv.$name=$value") ;;
      *) note "$name is not forwarded to a cluster-mode driver on $master" ;;
    esac
  done < <(env | grep -E '^RECS_[A-Z0-9_]+=' || true)
fi

jars=()
if [[ -n ${DEPLOY_JARS_DIR:-} ]]; then
  [[ -d $DEPLOY_JARS_DIR ]] || die "DEPLOY_JARS_DIR=$DEPLOY_JARS_DIR is not a folder"
  shopt -s nullglob
  found=("$DEPLOY_JARS_DIR"/*.jar)
  shopt -u nullglob
  [[ ${#found[@]} -gt 0 ]] || die "DEPLOY_JARS_DIR=$DEPLOY_JARS_DIR holds no .jar files (fill it with deploy/fetch-jars.sh)"
  jars+=(--jars "$(IFS=,; echo "${found[*]}")")
  [[ -z ${DEPLOY_EXTRA_PACKAGES:-} ]] || jars+=(--packages "$DEPLOY_EXTRA_PACKAGES")
else
  packages=$(delta_package)${DEPLOY_EXTRA_PACKAGES:+,$DEPLOY_EXTRA_PACKAGES}
  jars+=(--packages "$packages" --exclude-packages "$SPARK_PROVIDED")
fi
extra=()
if [[ -n ${DEPLOY_SUBMIT_ARGS:-} ]]; then
  # -d '': read the whole value, so options may span several lines.
  read -r -d '' -a extra <<<"$DEPLOY_SUBMIT_ARGS" || true
fi
if [[ ${#files[@]} -gt 0 ]]; then
  extra+=(--files "$(IFS=,; echo "${files[*]}")")
fi

cmd=(
  env ${submit_env[@]+"${submit_env[@]}"} "$submit"
  --master "$master"
  --deploy-mode "$mode"
  --name "recs-$step-$run_date"
  --properties-file "$props"
  --load-spark-defaults
  ${jars[@]+"${jars[@]}"}
  --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension
  --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog
  ${conf[@]+"${conf[@]}"}
  --py-files "$ROOT/jobs/_entry.py"
  ${extra[@]+"${extra[@]}"}
  "$job"
  ${job_args[@]+"${job_args[@]}"}
)

if [[ $dry_run == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
exec "${cmd[@]}"
