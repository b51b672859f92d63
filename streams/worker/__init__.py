"""The detection worker: a faust app judging every event with the detectors of models/."""
