"""The two functions of the getting-started API (docs/getting-started.md)."""

import datetime
import json


def _reply(body):
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def hello(event, context):
    """GET /hello"""
    return _reply({"message": "hello from reconcile"})


def clock(event, context):
    """The clock route: GET /time (GET /now after the change)"""
    return _reply({"utc": datetime.datetime.now(datetime.timezone.utc).isoformat()})
