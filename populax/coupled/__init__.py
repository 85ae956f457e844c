"""Coupled population methods: the members share state inside the update.

* CEM-RL (``cemrl.py`` + ``cem.py``): a shared TD3 critic, a CEM over the actors' parameters;
* DvD-TD3 (``dvd.py``): TD3 actors with a shared critic and a diversity term over all actors.

The algebra lives here (losses, the distribution, the kernel, the bandit),
as pure functions; the compiled population programs that run them are in
``populax.backends.compiled.coupled``. Their population-level state (shared
critic, CEM distribution, bandit) is ``Member.shared``: no member axis,
checkpointed with the members.
"""
