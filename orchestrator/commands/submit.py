"""`submit`: run one of these commands as a Ray job on a cluster, from this checkout. The same as
`ray job submit --working-dir . --runtime-env cluster/runtime_env.yaml -- python
orchestrator/run.py ARGS`, plus where the code came from: the job's upload holds no `.git`, so
the commit, whether tracked files differed from it, and the user are resolved here and carried
into the job (common/source.py), and its MLflow runs name them."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from orchestrator.common.errors import ConfigError, InputError
from orchestrator.common.paths import REPO_ROOT


def add_arguments(parser) -> None:
    parser.add_argument(
        "--address",
        help="the cluster's dashboard, e.g. http://127.0.0.1:8265 (default: $RAY_ADDRESS, "
        "else a local Ray's)",
    )
    parser.add_argument(
        "--runtime-env",
        type=Path,
        default=REPO_ROOT / "cluster" / "runtime_env.yaml",
        help="the job's runtime environment (default: cluster/runtime_env.yaml); its "
        "working_dir is this checkout",
    )
    parser.add_argument("--submission-id", help="the job's id (default: Ray makes one)")
    parser.add_argument(
        "--no-wait", action="store_true", help="return once submitted; do not follow its log"
    )
    parser.add_argument(
        "job",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the command to run and its options, e.g. -- sweep --config cluster",
    )


def job_request(args) -> tuple[str, dict]:
    """(entrypoint, runtime environment) of the job, or a ConfigError naming what is wrong."""
    import yaml

    from orchestrator.common.source import SOURCE_ENV, resolve_source

    command = args.job[1:] if args.job[:1] == ["--"] else args.job
    if not command:
        raise ConfigError("submit: name the command to run after --, e.g. submit -- train")
    if not (REPO_ROOT / "orchestrator" / "run.py").is_file():
        raise ConfigError(
            "submit: uploads this project's checkout as the job's working directory, and this "
            "installation has none; run it from a git checkout, or `ray job submit` yourself"
        )
    try:
        runtime_env = yaml.safe_load(args.runtime_env.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"--runtime-env: {args.runtime_env}: {error}") from None
    if not isinstance(runtime_env, dict):
        raise ConfigError(f"--runtime-env: {args.runtime_env}: allowed: a mapping")
    runtime_env["working_dir"] = str(REPO_ROOT)
    env_vars = runtime_env.setdefault("env_vars", {})
    env_vars[SOURCE_ENV] = json.dumps(resolve_source("orchestrator/run.py", "JOB"))
    return shlex.join(["python", "orchestrator/run.py", *command]), runtime_env


def run(args) -> int:
    import asyncio

    from ray.job_submission import JobStatus, JobSubmissionClient

    from orchestrator.common.source import COMMIT, SOURCE_ENV

    entrypoint, runtime_env = job_request(args)
    try:
        client = JobSubmissionClient(args.address)
    except ConnectionError as error:
        raise InputError(f"submit: {error} (--address, or RAY_ADDRESS)") from None
    job_id = client.submit_job(
        entrypoint=entrypoint, runtime_env=runtime_env, submission_id=args.submission_id
    )
    source = json.loads(runtime_env["env_vars"][SOURCE_ENV])
    print(f"submitted job {job_id} ({source.get(COMMIT, 'no git commit')}): {entrypoint}")
    if args.no_wait:
        print(f"follow it: ray job logs --follow {job_id}; stop it: ray job stop {job_id}")
        return 0

    async def follow() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    try:
        asyncio.run(follow())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(
            f"stopped following job {job_id}, which goes on; ray job stop {job_id} ends it"
        ) from None
    status = client.get_job_status(job_id)
    print(f"job {job_id} {status.value.lower()}")
    return 0 if status == JobStatus.SUCCEEDED else 1
