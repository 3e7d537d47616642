"""One dispatcher (and core service) behind both skins: REST (uvicorn) and gRPC, on free ports, with real clients."""

from __future__ import annotations

import grpc
import httpx
import pytest

from derivd.config import Settings
from derivd.core import Service
from derivd.dispatch import Dispatcher
from derivd.grpc_api import derivd_pb2_grpc as pb_grpc
from derivd.grpc_api.server import GrpcServer, channel_options
from tests.conftest import LiveServer
from tests.support import grpc_servers


class Stack:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.dispatcher = Dispatcher(Service(settings))
        self.service = self.dispatcher.service
        self.rest = LiveServer(settings, self.dispatcher)
        self.grpc = GrpcServer(self.dispatcher, settings, 0, host="127.0.0.1")

    def __enter__(self):
        self.rest.__enter__()
        self.grpc.start()
        self.target = f"127.0.0.1:{self.grpc.port}"
        self.channel = grpc.insecure_channel(self.target, options=channel_options(self.settings.grpc_max_message_bytes))
        self.stub = pb_grpc.DifferentiatorStub(self.channel)
        self.http = httpx.Client(base_url=self.rest.url, timeout=60)
        return self

    def __exit__(self, *exc):
        self.http.close()
        self.channel.close()
        self.grpc.stop(grace=0.5)
        self.rest.__exit__(*exc)
        self.dispatcher.close()


@pytest.fixture(scope="package")
def stack():
    with Stack(Settings(host="127.0.0.1")) as s:
        yield s


@pytest.fixture(scope="package")
def stub(stack):
    return stack.stub


@pytest.fixture(scope="package")
def rest(stack):
    return stack.http


@pytest.fixture()
def serve(stack):
    """``serve(**settings)``: a GrpcServer (with its session socket) on the stack's dispatcher."""
    with grpc_servers(stack.dispatcher) as start:
        yield start
