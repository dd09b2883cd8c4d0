"""Pointing this process's Celery app (the web side) at another broker."""

from contextlib import contextmanager

import kombu.pools

from config.celery import app as celery_app
from rewardmodel.tasks import wait_for_publisher


@contextmanager
def use_broker(url: str, transport_options: dict):
    # Celery reads broker settings once (override_settings does not reach it)
    # and kombu keeps connection and producer pools in process-wide registries
    # keyed by connection: switch the app's config and drop those pools.
    # The publisher thread (rewardmodel.tasks) finishes what it holds on the
    # broker it was given first.
    wait_for_publisher()
    saved = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    celery_app.conf.broker_url = url
    celery_app.conf.broker_transport_options = transport_options
    _drop_connection_pools()
    try:
        yield
    finally:
        wait_for_publisher()
        celery_app.conf.broker_url, celery_app.conf.broker_transport_options = saved
        _drop_connection_pools()


def _drop_connection_pools():
    kombu.pools.reset()
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
