"""Control panels call the same plain functions as cells, and turn bad settings into a message."""

from labsupport import ControlPanel, int_slider, slider
from labsupport.experiments.pull_push import run_push


def make_panel(clients=2):
    return ControlPanel(run_push, {"rate": slider("rate", 1, 50, 1, 10), "clients": int_slider("clients", 1, 10, clients),
                                   "duration": slider("seconds", 0.5, 5, 0.5, 0.5)},
                        show=lambda r: [r.table()])


def test_run_returns_the_same_kind_of_result_as_a_cell():
    panel = make_panel()
    result = panel.run()
    assert result.summary()["clients"] == 2 and result.summary()["missed"] == 0
    assert panel.bar.value == 1.0 and not panel.button.disabled
    assert panel.status.value == "done"


def test_a_bad_setting_shows_a_message_not_a_traceback():
    panel = make_panel()
    panel.controls["rate"].min = 0
    panel.controls["rate"].value = 0
    assert panel.run() is None
    assert "Could not run with these settings" in panel.status.value and "rate" in panel.status.value
    assert not panel.button.disabled
