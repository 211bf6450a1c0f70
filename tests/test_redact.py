"""Secrets masked in what we print and log: URI passwords of every scheme we meet, secret query
parameters and assignments, credential environment variables; user names stay readable."""

from urllib.parse import quote

import pytest

from orchestrator.common.redact import redact, redact_exception, redact_text

MASKED = [
    (
        "http://alice:s3cret-pw@mlflow.internal:5000/api",
        "http://alice:***@mlflow.internal:5000/api",
    ),
    ("https://alice:s3cret-pw@mlflow.example.com", "https://alice:***@mlflow.example.com"),
    (
        "s3://AKIAEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCY@bucket/prefix",
        "s3://AKIAEXAMPLE:***@bucket/prefix",
    ),
    ("postgresql://mlflow:s3cret-pw@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
    (
        "postgresql+psycopg2://mlflow:s3cret-pw@db/mlflow",
        "postgresql+psycopg2://mlflow:***@db/mlflow",
    ),
    ("http://alice:p%40ss%2Fw0rd%3A@mlflow:5000", "http://alice:***@mlflow:5000"),  # URL-encoded
    ("http://alice:pa:ss@w0rd@mlflow:5000/api", "http://alice:***@mlflow:5000/api"),  # `:` and `@`
    ("redis://:s3cret-pw@cache:6379/0", "redis://:***@cache:6379/0"),  # no user
    (
        "failed: 'http://alice:s3cret-pw@h:1/x', see user@example.com",
        "failed: 'http://alice:***@h:1/x', see user@example.com",
    ),
    (
        "https://host/db?user=bob&password=s3cret-pw&ssl=1",
        "https://host/db?user=bob&password=***&ssl=1",
    ),
    (
        "s3://bucket/key.bin?X-Amz-Date=20240101&X-Amz-Signature=f00dcafe",
        "s3://bucket/key.bin?X-Amz-Date=20240101&X-Amz-Signature=***",
    ),
    ("https://host/api?token=s3cret-tok#section", "https://host/api?token=***#section"),
    (
        "https://acct.blob.core.windows.net/c?sv=2022&sig=s3cret%2Bsig",
        "https://acct.blob.core.windows.net/c?sv=2022&sig=***",
    ),
    (
        "host=db user=mlflow password=s3cret-pw dbname=mlflow",
        "host=db user=mlflow password=*** dbname=mlflow",
    ),
    ("RAY_AUTH_TOKEN=s3cret-tok ray job submit", "RAY_AUTH_TOKEN=*** ray job submit"),
]


@pytest.mark.parametrize("text, expected", MASKED)
def test_secrets_in_text_are_masked(text, expected):
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize(
    "text",
    [
        "http://alice@mlflow.internal:5000/api",  # a user name alone is no secret
        "https://mlflow.example.com:443/#/experiments/1",
        "http://127.0.0.1:5000/api/2.0/mlflow/runs/get?run_id=abc@def",  # a port, not a password
        "sqlite:////tmp/mlflow.db",
        "s3://bucket/prefix/checkpoint_000004",
        "max_tokens=5 key=val_top1_error Metric(key=loss, value=0.5)",
        "user alice: connection refused at host:5000",
    ],
)
def test_text_without_secrets_is_kept(text):
    assert redact_text(text) == text


@pytest.mark.parametrize(
    "name",
    [
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_PASSWORD",
        "RAY_AUTH_TOKEN",
        "PGPASSWORD",
        "MLFLOW_TRACKING_TOKEN",
        "AWS_SESSION_TOKEN",
    ],
)
def test_values_of_credential_variables_are_masked_plain_and_url_encoded(name, monkeypatch):
    value = "wJalr/K7MD+ENG:b@x"
    monkeypatch.setenv(name, value)
    text = f"connected with {value} to http://h/?q={quote(value, safe='')}"
    assert redact_text(text) == "connected with *** to http://h/?q=***"


def test_a_user_name_from_the_environment_is_not_masked(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice-the-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "s3cret-password")
    text = "http://alice-the-user:s3cret-password@mlflow:5000 refused alice-the-user"
    assert redact_text(text) == "http://alice-the-user:***@mlflow:5000 refused alice-the-user"


def test_redact_masks_by_key_and_by_value():
    tree = {
        "storage": {"secret_key": "abc123", "password": "", "uri": "s3://k:wJalr/x@b"},
        "tags": ["https://a:b0b-pw@h"],
        "epochs": 3,
    }
    assert redact(tree) == {
        "storage": {"secret_key": "***", "password": "", "uri": "s3://k:***@b"},
        "tags": ["https://a:***@h"],
        "epochs": 3,
    }


def test_redact_exception_is_one_short_line_without_secrets():
    error = ConnectionError(
        "API request to http://alice:s3cret@127.0.0.1:9/api/2.0/x failed\ncaused by something"
    )
    assert redact_exception(error) == (
        "ConnectionError: API request to http://alice:***@127.0.0.1:9/api/2.0/x failed"
    )
    # masked before it is cut: a URI cut before its `@` would not be recognised any more
    long = RuntimeError("x" * 40 + " http://alice:s3cret-password-that-is-long@host/")
    shown = redact_exception(long, max_chars=60)
    assert "s3cr" not in shown and shown.endswith("...")
    assert len(shown) == len("RuntimeError: ") + 60
    assert redact_exception(KeyError()) == "KeyError"

    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("broken")

    assert redact_exception(Unprintable()) == "Unprintable: <unprintable message>"


def test_a_prepared_datasets_uri_is_printed_without_its_secret(capsys):
    """`prepare` (and `train`, `evaluate`, `figures`, `neighbors`, which print where the data and
    the model are) name an object-store URI without the secret a user put in it."""
    from orchestrator.data.prepare import PrepareResult
    from orchestrator.data.sources import report_prepare

    uri = "s3://AKIAEXAMPLE:wJalrXUtnFEMI/K7MDENG@bucket/prepared"
    done = dict(images={"train": 8, "val": 2}, rejects=0, total=10, rejects_file=f"{uri}/r.csv")
    for skipped in (True, False):
        result = PrepareResult(
            out=uri, skipped=skipped, processed=10, seconds=1.0, cpus=2.0, manifest=None, **done
        )
        report_prepare(result)
        printed = "".join(capsys.readouterr())  # the result (stdout) or the note (stderr)
        assert "s3://AKIAEXAMPLE:***@bucket/prepared" in printed
        assert "wJalrXUtnFEMI" not in printed
