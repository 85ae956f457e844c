"""One member's loop, written once per algorithm family and used by every backend.

A backend is an experience source: the compiled backend steps JAX environments inside one jitted chunk, the
host backend steps Gymnasium vector envs on the CPU, Ray places blocks of members of either on workers. What a
member *does* with its experience is here, for ONE member, as small pure functions (``act``, ``observe``,
``learn``) that each backend calls inside its own program:

* ``offpolicy``: replay (TD3, SAC, DQN, a user's off-policy ``Agent``);
* ``onpolicy``: rollouts (PPO, a user's ``OnPolicyAgent``);
* ``coupled``: CEM-RL and DvD-TD3, population-level learners on the same experience (members share a critic);
* ``shape``: the loop's static shape (phases of env iterations and learning steps) and the loop facts an
  algorithm is built with (``agent_spec``), the same on both backends.
"""
