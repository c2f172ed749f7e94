"""The explorer app (`gsgan-explorer`): a Dear PyGui window around the headless viewer in
`gsgan_core.view`.

- `app.py`      the console script: arguments, the no-display message, the demo checkpoint
- `window.py`   `ExplorerApp`: the window, the frame loop, the status bar
- `viewport.py` the view: the frame as a texture, mouse gestures, picking
- `panels/`     one class per panel (Checkpoint, Latent, Levels, Camera, Render, Record, Performance)
- `recent.py`   the recent-files list; `texture.py` the frame -> texture copy
"""
