"""The viewer without a window: what `gsgan-explorer`, `gsgan-render` and `gsgan-export` share.

- `state.py`         the state, as frozen parts (latent, levels, camera, render, record)
- `engine.py`        state in, frame out, with a cache per stage keyed by those parts
- `edits.py`         level filter and display edits after the generator, the depth colormap
- `viewer_camera.py` the orbit camera around a pivot, and the mouse gestures that move it
- `recording.py`     trajectories (turntable, wobble, interp) rendered into a file
- `video.py`         MP4 / GIF / PNG writing, atomic
- `commands.py`      `gsgan-render` and `gsgan-export`

Nothing here imports dearpygui or the `explorer` app; the app imports this package.
"""
