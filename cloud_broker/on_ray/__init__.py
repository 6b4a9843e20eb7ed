"""The broker on Ray Serve (``cloud-broker serve --ray ADDRESS``, the ``ray`` extra).

:mod:`.app` builds the application: a deployment per served model (:mod:`.replica`)
and the gRPC front (:mod:`.front`), which reaches the models through handles
(:mod:`.remote`) and shares its limits with every other front (:mod:`.limits`);
:mod:`.launch` starts it from the command line. Nothing here imports Ray until it runs.
"""
