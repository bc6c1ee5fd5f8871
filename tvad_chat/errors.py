"""Our exception types.

Every error a user can cause (bad file, bad option, missing checkpoint)
raises a subclass of TVADError whose message says what is wrong and what to
do. The CLI and the UI catch TVADError, show the message and keep running.
"""


class TVADError(Exception):
    """Base class of every error a user can cause."""


class VideoError(TVADError):
    """A video file or frame folder cannot be used (not a video, corrupted, empty, too large...)."""


class ConfigError(TVADError):
    """An option or configuration value is out of range or inconsistent."""


class CheckpointError(TVADError):
    """A model or head checkpoint is missing, incomplete or not ours."""


class DataError(TVADError):
    """A dataset, annotation, corpus or evaluation file is missing or malformed."""


class ProfileError(TVADError):
    """A scene profile cannot be made or used (too little footage, mixed cameras, corrupt or newer files)."""
