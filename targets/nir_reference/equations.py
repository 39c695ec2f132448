"""Forward-Euler discretisation of NIR's neuron equations: the one place the
NIR reference target defines its dynamics. Pure functions of the state and
the input of one step; the caller keeps the state.

With time step ``dt``, for input ``I[t]`` (the sum of every incoming edge)::

    I        (integrator)   v[t] = v[t-1] + dt * r * I[t]                   -> v[t]
    IF                      v'   = v[t-1] + dt * r * I[t]
    LI                      v[t] = v[t-1] + dt / tau * (v_leak - v[t-1] + r * I[t])   -> v[t]
    LIF                     v'   = v[t-1] + dt / tau * (v_leak - v[t-1] + r * I[t])
    CubaLI / CubaLIF        i[t] = i[t-1] + dt / tau_syn * (w_in * I[t] - i[t-1])
                            v'   = v[t-1] + dt / tau_mem * (v_leak - v[t-1] + r * i[t])
    firing (IF, LIF, CubaLIF)   s[t] = 1 if v' > v_threshold else 0
                                v[t] = v_reset if s[t] else v'             -> s[t]
    Threshold (stateless)   s[t] = 1 if I[t] > threshold else 0             -> s[t]

State starts at 0 (v and i). The comparison is strict ``>`` (SPEC §2) and the
reset is applied in the step that spikes. In the current-based neurons the
membrane integrates the synaptic current of the same step (i[t], not
i[t-1]), as Lava's and Loihi's CUBA neurons do. With dt = 1, r = 1,
v_leak = 0, an IF is SPEC's ``v' = v + I`` and a LIF SPEC's ``v' = v + (I - v)
/ tau``.
"""
from __future__ import annotations

import numpy as np


def fire(v_pre: np.ndarray, v_threshold, v_reset) -> tuple[np.ndarray, np.ndarray]:
    """Spike where the pre-reset membrane exceeds the threshold, then reset."""
    spikes = v_pre > v_threshold
    return spikes, np.where(spikes, v_reset, v_pre)


def integrator_step(v, current, r, dt: float) -> np.ndarray:
    return v + dt * r * current


def if_step(v, current, r, v_threshold, v_reset, dt: float):
    """-> (spikes, v after reset)"""
    return fire(integrator_step(v, current, r, dt), v_threshold, v_reset)


def leaky_integrator_step(v, current, tau, r, v_leak, dt: float) -> np.ndarray:
    return v + (dt / tau) * (v_leak - v + r * current)


def lif_step(v, current, tau, r, v_leak, v_threshold, v_reset, dt: float):
    """-> (spikes, v after reset)"""
    return fire(leaky_integrator_step(v, current, tau, r, v_leak, dt), v_threshold, v_reset)


def synaptic_current_step(i_syn, current, tau_syn, w_in, dt: float) -> np.ndarray:
    return i_syn + (dt / tau_syn) * (w_in * current - i_syn)


def cuba_li_step(i_syn, v, current, tau_syn, tau_mem, r, v_leak, w_in, dt: float):
    """-> (i_syn, v)"""
    i_syn = synaptic_current_step(i_syn, current, tau_syn, w_in, dt)
    return i_syn, leaky_integrator_step(v, i_syn, tau_mem, r, v_leak, dt)


def cuba_lif_step(i_syn, v, current, tau_syn, tau_mem, r, v_leak, v_threshold, v_reset, w_in, dt: float):
    """-> (spikes, i_syn, v after reset)"""
    i_syn, v_pre = cuba_li_step(i_syn, v, current, tau_syn, tau_mem, r, v_leak, w_in, dt)
    spikes, v = fire(v_pre, v_threshold, v_reset)
    return spikes, i_syn, v


def threshold(current, theta) -> np.ndarray:
    return current > theta
