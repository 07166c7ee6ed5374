"""Stage helpers of the flows."""

from __future__ import annotations


def test_flow_runs_started_inside_send_no_heartbeats_and_the_setting_comes_back():
    from prefect.settings import get_current_settings, temporary_settings

    from tasks.stages import without_heartbeats

    with temporary_settings(updates={"flows.heartbeat_frequency": 30}):
        with without_heartbeats():
            assert get_current_settings().flows.heartbeat_frequency is None
            with without_heartbeats():  # nested (the command line's, then a family's): still off
                assert get_current_settings().flows.heartbeat_frequency is None
            assert get_current_settings().flows.heartbeat_frequency is None
        assert get_current_settings().flows.heartbeat_frequency == 30

