"""Errors keep their class across a process boundary: a worker's reply is rebuilt as the error it was."""

import pytest

from derivd import errors


@pytest.mark.parametrize("kind", errors._subclasses(errors.DerivdError), ids=lambda k: k.__name__)
def test_every_error_class_is_rebuilt_from_its_body(kind):
    sent = kind("it went wrong", where=3)
    body = sent.to_body()["error"]
    got = errors.rebuild(body["message"], body["code"], sent.status, **body["detail"])
    assert type(got) is kind and got.to_body() == sent.to_body() and got.status == sent.status


def test_a_worker_stopped_at_its_deadline_is_a_deadline_exceeded_to_the_gateway():
    """The race the chaos test met: the worker's own 504 reply arrives before gRPC's deadline fires."""
    late = errors.rebuild("the request ran past its deadline of 0.5 s; stopped there", "deadline_exceeded", 504,
                          deadline_s=0.5)
    assert isinstance(late, errors.DeadlineExceeded) and late.status == 504 and late.detail == {"deadline_s": 0.5}


def test_a_code_without_a_class_stays_a_plain_error_with_its_code_and_status():
    other = errors.rebuild("no worker", "pool_unavailable", 503, pool="forward")
    assert type(other) is errors.DerivdError and (other.code, other.status, other.detail) == (
        "pool_unavailable", 503, {"pool": "forward"})
