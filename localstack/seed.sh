#!/usr/bin/env bash
# Create the example queues of the README walkthrough in a running LocalStack:
#   veltrix-orders       (redrive to veltrix-orders-dlq after 10 receives)
#   veltrix-orders-dlq
#   veltrix-forwarded
# Idempotent: running it again leaves the same queues and settings. Prints the queue URLs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="$HERE/.venv/bin/python"
ENDPOINT="http://127.0.0.1:${LOCALSTACK_PORT:-4566}"

[[ -x "$PY" ]] || { echo "localstack: error: $PY missing; run localstack/start.sh first" >&2; exit 1; }

# boto3 comes with localstack-core in the venv. The emulator accepts any credentials; fixed
# ones here so the user's own AWS profile can never be used (or sent anywhere) by accident.
env -u AWS_PROFILE -u AWS_SESSION_TOKEN \
  ENDPOINT="$ENDPOINT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
  AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 \
  "$PY" - <<'EOF'
import json, os, sys

import boto3
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError

endpoint = os.environ["ENDPOINT"]
sqs = boto3.client(
    "sqs",
    endpoint_url=endpoint,
    region_name="us-east-1",
    config=Config(retries={"max_attempts": 2}, connect_timeout=3, read_timeout=10),
)


def queue(name):
    # CreateQueue without attributes is idempotent (same name -> same URL). Attributes are set
    # separately, because CreateQueue with attributes that differ from an existing queue's
    # fails with QueueAlreadyExists.
    return sqs.create_queue(QueueName=name)["QueueUrl"]


try:
    dlq_url = queue("veltrix-orders-dlq")
except EndpointConnectionError:
    sys.exit(f"localstack: error: nothing answers at {endpoint}; run localstack/start.sh first")

dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
    "Attributes"
]["QueueArn"]
orders_url = queue("veltrix-orders")
sqs.set_queue_attributes(
    QueueUrl=orders_url,
    Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 10})
    },
)
forwarded_url = queue("veltrix-forwarded")

for name, url in [
    ("veltrix-orders", orders_url),
    ("veltrix-orders-dlq", dlq_url),
    ("veltrix-forwarded", forwarded_url),
]:
    print(f"{name:20} {url}")
EOF
