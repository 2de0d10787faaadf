"""Audio stages: decoding and transcoding (codec), trim, and librosa-style features."""
