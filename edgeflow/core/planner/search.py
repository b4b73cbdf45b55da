"""Exact plan search: every tier set, cut pair, codec per hop and exit-threshold combo, vectorised.

Plans are grouped by *shape*, the tiers that compute: the source alone; the source handing over at hop
position ``p`` to tier ``j`` (``p = 0`` means the source runs nothing and sends the raw input with an input
codec); and, with three tiers, ``source[0:p1] > edge[p1:p2] > cloud[p2:]`` (``p1 = 0``: edge and cloud only).

**Why it is exact and fast.** For an exit combo θ, let ``R(p)`` be the probability a request is still
unanswered after position ``p`` and ``Φ_t(p)`` the expected cost of running tier ``t`` from the input to ``p``
(compute and heads weighted by who is still running, minus the reply saved by answering early). A tier running
``[a:b]`` costs ``Φ_t(b) - Φ_t(a)`` in expectation, so a three-tier plan's expected latency splits into a part
that depends on ``(θ, p1, codec1)`` and one that depends on ``(θ, p2, codec2)``:

    L = [Φ_0(p1) - Φ_0(0) - Φ_1(p1) + R(p1) hop01(p1, c1)] + [Φ_1(p2) - Φ_2(p2) + Φ_2(N) + R(p2) hop12(p2, c2)]

The only couplings are ``p1 < p2`` (plus the edge's memory cap: ``p2 <= hi(p1)``) and the accuracy budget
``drop(p1, c1) + drop(p2, c2) <= budget(θ)``. The budget is handled exactly by levels: for each distinct drop
value ``D[l]`` the best second hop with ``drop <= D[l]``; the first hop's codec picks the level. The cut order
by a suffix (or range) minimum over ``p2``. So the search costs O(Q · P · K · levels) instead of
O(Q · P² · K²), with Q combos, P hop positions and K codecs.

- *energy* under an SLO: the source's energy depends on the second part only through the latency it waits
  (``idle_w >= 0``), so for each first part the best second part is the fastest one: same tables.
- *throughput*: minimise ``max(A(first), u(first) + v(second), W(second))`` (source and its link; the middle
  tier, shared; the last link and tier). Feasibility of a bound τ is the same separable check with masks
  ``A, W <= τ``; a bisection by median selection over the values of A and W finds the bracket, and inside
  it the bottleneck is ``u + v``, minimised exactly. These arrays run codec-first with codecs sorted by drop,
  so a level minimum is a cumulative minimum over codecs.

A tier that is down (``unavailable``) takes no part: neither do the tiers past it, since a hop relays through
every tier between its ends. Exit combos that alone break the accuracy floor are dropped up front. The returned
plans are re-evaluated with :meth:`CostModel.evaluate` (the explicit per-outcome walk that ``oracle.py`` enumerates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import numpy as np

from edgeflow.core.plan import Plan
from edgeflow.errors import PlanError

from .costmodel import _EPS, OBJECTIVES, Breakdown, Choice, Conditions, CostModel

__all__ = ["Candidate", "SearchResult", "Planner", "search"]

_INF = np.inf


@dataclass(frozen=True)
class Candidate:
    """A plan with its predicted cost.

    Attributes:
        plan: the plan (its ``input_codec`` named when the source sends the raw input).
        value: the objective value (seconds for latency and throughput's bottleneck, joules for energy).
        breakdown: the explicit prediction.
        choice: the plan in cost-model terms.
    """

    plan: Plan
    value: float
    breakdown: Breakdown
    choice: Choice

    def __str__(self) -> str:
        return str(self.plan)


@dataclass(frozen=True)
class SearchResult:
    """The best plan and the best plan of each other tier set (``alternatives``, best first)."""

    objective: str
    best: Candidate
    alternatives: tuple[Candidate, ...]
    num_plans: int


class Planner:
    """Precomputes everything that does not depend on links, queues or compute corrections.

    Args:
        model: the cost model.
    """

    def __init__(self, model: CostModel):
        self.model = md = model
        em = md.exit_model
        n, m = md.num_positions, len(md.tiers)
        hop = md.hop_pos
        e = len(em.positions)
        epos = np.array(em.positions, dtype=np.int64)
        le = (epos[:, None] <= hop[None, :]).astype(np.float64)  # (E, P): exit j decided at or before hop i
        # combos whose exits alone already break the accuracy floor are dropped; rows maps back to the model's
        self.rows = np.flatnonzero(md.budget_pts >= -_EPS)
        ans, head = em.answer_prob[self.rows], em.head_prob[self.rows]  # (Q, E+1), (Q, E)
        self.reach = 1.0 - ans[:, :e] @ le  # (Q, P): still unanswered when leaving hop position i
        self.reach3 = self.reach[:, :, None]
        self.phic = np.stack(
            [(ans[:, :e] * md.cum_compute[t, epos]) @ le + self.reach * md.cum_compute[t, hop] + (head * md.head_s[t]) @ le
             for t in range(m)]
        )  # (m, Q, P): expected compute + heads from the input to hop i, weighted by who is still running
        self.phic_n = np.stack(
            [ans[:, :e] @ md.cum_compute[t, epos] + ans[:, e] * md.cum_compute[t, n] + head @ md.head_s[t] for t in range(m)]
        )  # (m, Q)
        q, p, k = len(ans), len(hop), len(md.codecs)
        self.shape = (q, p, k)
        self.valid = np.isfinite(md.drop_pts)  # (P, K)
        self.inf_invalid = np.where(self.valid, 0.0, _INF)
        budget = md.budget_pts[self.rows]  # (Q,)
        drop = np.where(self.valid, md.drop_pts, _INF)
        # levels of the second hop's budget (three tiers): distinct drops at cuts, up to the largest budget
        levels = np.unique(drop[1:][np.isfinite(drop[1:])]) if p > 1 else np.zeros(0)
        levels = levels[levels <= max(budget.max(initial=0.0), 0.0) + _EPS]
        self.levels = levels if len(levels) else np.zeros(1)
        self.inf_level = np.where(drop[None, :, :] <= self.levels[:, None, None] + _EPS, 0.0, _INF)  # (L, P, K)
        self.inf_level[:, 0, :] = _INF  # the second hop is never at the input
        level = np.searchsorted(self.levels, budget[:, None, None] - drop[None] + _EPS, side="right") - 1  # (Q,P,K)
        inf_level_first = np.where(level >= 0, 0.0, _INF)
        self.level = np.maximum(level, 0)
        # level minima by a cumulative min over codecs sorted by drop: count[l, j] codecs fit level l at j
        self.lv_order = np.argsort(drop, axis=1, kind="stable")  # (P, K), unusable codecs last
        sdrop = np.take_along_axis(drop, self.lv_order, axis=1)
        count = (sdrop[None] <= self.levels[:, None, None] + _EPS).sum(axis=2)  # (L, P)
        count[:, 0] = 0
        self.lv_idx = np.maximum(count - 1, 0).T  # (P, L)
        self.lv_inf = np.where(count > 0, 0.0, _INF).T  # (P, L)
        # memory caps and privacy
        mem = np.array([[md.range_memory_nbytes(int(a), int(b)) for b in [*hop, n]] for a in hop])  # (P, P+1)
        caps = [t.memory_cap_nbytes if t.memory_cap_nbytes is not None else _INF for t in md.tiers]
        inf_head = np.where(mem[0, :p] <= caps[0], 0.0, _INF)  # the source runs [0:hop i]
        if md.privacy:
            inf_head[0] = _INF
        self.inf_tail = np.stack([np.where(mem[:, p] <= caps[t], 0.0, _INF) for t in range(m)])  # tier t runs [hop i:N]
        self.hi = np.full(p, p - 1)  # three tiers: the edge's range [hop i: hop j] fits for i < j <= hi[i]
        if m == 3:
            ok = mem[:, :p] <= caps[1]
            self.hi = np.array([max([j for j in range(i + 1, p) if ok[i, j]], default=i) for i in range(p)])
        self.range_limited = bool((self.hi < p - 1).any())
        # combined static masks of a first hop: usable codec, source memory, privacy, combo, accuracy
        first = self.inf_invalid[None] + inf_head[None, :, None] + np.zeros((q, 1, 1))
        self.mask2 = first + np.where(drop[None] <= budget[:, None, None] + _EPS, 0.0, _INF)  # one hop in all
        self.mask3 = first + inf_level_first  # a second hop follows
        self.num_plans = int(q * (1 + (m - 1) * p * k + (p * (p - 1) // 2 * k * k if m == 3 else 0)))
        self._tput: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------------------------ search
    def search(
        self,
        cond: Conditions,
        objective: str = "latency",
        *,
        latency_slo_s: float | None = None,
        top_k: int = 3,
        unavailable: Collection[str] = (),
    ) -> SearchResult:
        """The best feasible plan for ``objective`` and the best plan of each other tier set.

        Args:
            cond: links, queues and compute corrections.
            objective: ``"latency"`` (expected seconds), ``"energy"`` (source joules, under ``latency_slo_s``
                when given) or ``"throughput"`` (bottleneck seconds per request).
            latency_slo_s: expected latency bound for latency and energy objectives.
            top_k: alternatives to return.
            unavailable: tiers that are down: plans use none of them, nor any tier past them.

        Raises:
            PlanError: unknown objective, conditions that do not fit the chain, an unknown or source tier in
                ``unavailable``, or no feasible plan.
        """
        md = self.model
        if objective not in OBJECTIVES:
            raise PlanError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if latency_slo_s is not None and objective == "throughput":
            raise PlanError("latency_slo_s applies to the latency and energy objectives, not throughput")
        md.check_conditions(cond)
        reach = self.reach_of(unavailable)
        dyn = _Dynamic(self, cond)
        found = [g for g in self._groups(dyn, objective, latency_slo_s) if np.isfinite(g[0])] if len(self.rows) else []
        found = [g for g in found if max(g[1].tiers) < reach]
        if not found:
            down = f"; {', '.join(sorted(unavailable))} down" if reach < len(md.tiers) else ""
            raise PlanError(_why_none(md, objective, latency_slo_s) + down)
        found.sort(key=lambda vc: vc[0])
        cands = [
            Candidate(md.to_plan(ch), float(value), md.evaluate(ch, cond), ch)
            for value, ch in found[: top_k + 1]
        ]
        return SearchResult(objective, cands[0], tuple(cands[1:]), self.num_plans)

    def reach_of(self, unavailable: Collection[str]) -> int:
        """How many tiers, from the source, plans may use while ``unavailable`` are down.

        Raises:
            PlanError: a tier not in the chain, or the source.
        """
        names = self.model.names
        unknown = [t for t in unavailable if t not in names]
        if unknown:
            raise PlanError(f"unavailable tiers {unknown} are not in the chain {' > '.join(names)}")
        reach = min((names.index(t) for t in unavailable), default=len(names))
        if reach == 0:
            raise PlanError(f"the source tier {names[0]} cannot be unavailable: it plans")
        return reach

    def _groups(self, dyn: "_Dynamic", objective: str, slo: float | None):
        """Yield (value, choice) for the best plan of each tier set."""
        md = self.model
        m = len(md.tiers)
        # the source alone
        ok = self.inf_tail[0][0]
        lat = dyn.phi_n[0] + dyn.queue[0] + dyn.fixed[0] + ok  # (Q,)
        busy = dyn.f[0] * self.phic_n[0] + dyn.fixed[0]
        if objective == "latency":
            val = lat
        elif objective == "energy":
            pw = md.tiers[0].power
            val = _finite_or_inf(lat, pw.idle_w * _zero_inf(lat) + (pw.active_w - pw.idle_w) * busy)
        else:
            val = busy + ok
        if slo is not None:
            val = np.where(lat <= slo, val, _INF)
        th = int(np.argmin(val))
        yield float(val[th]), Choice((0,), (), (), self._exits(th))
        # the source handing over to one tier j (at the input or at a cut)
        for j in range(1, m):
            rest = dyn.phi_n[j][:, None] - dyn.phi[j] + self.inf_tail[j][None]  # (Q, P)
            lat = dyn.first(j, self.mask2) + rest[:, :, None]
            if objective == "latency":
                val = lat
            elif objective == "energy":
                val = dyn.energy(lat)
            else:
                recv = (self.reach3 * (dyn.decode(j) + dyn.fixed[j])
                        + (dyn.f[j] * (self.phic_n[j][:, None] - self.phic[j]))[:, :, None])  # fmt: skip
                link = self.reach3 * dyn.nbytes8(0) / dyn.bw[:j].min()
                val = _finite_or_inf(lat, np.maximum(np.maximum(dyn.busy0(), link), recv))
            if slo is not None:
                val = np.where(lat <= slo, val, _INF)
            for lo, hi in ((0, 1), (1, val.shape[1])):
                part = val[:, lo:hi]
                if part.size == 0:
                    continue
                th, i, k = np.unravel_index(int(np.argmin(part)), part.shape)
                exits, codec, pos = self._exits(int(th)), md.codecs[k], int(md.hop_pos[i + lo])
                ch = Choice((j,), (), (codec,), exits) if pos == 0 else Choice((0, j), (pos,), (codec,), exits)
                yield float(part[th, i, k]), ch
        if m == 3:
            yield from (self._three_throughput(dyn) if objective == "throughput" else self._three(dyn, objective, slo))

    # ------------------------------------------------------------------------------------ three tiers
    def _three(self, dyn: "_Dynamic", objective: str, slo: float | None):
        h12 = dyn.hop(1, 2)  # (P, K), inf where unusable
        g12 = self._level_min(h12[None])[0]  # (P, L): fastest hop within each level, the same for every combo
        base2 = dyn.phi[1] - dyn.phi[2] + dyn.phi_n[2][:, None] + self.inf_tail[2][None]  # (Q, P)
        gv = base2[:, :, None] + self.reach3 * _zero_inf(g12)[None] + np.where(np.isfinite(g12), 0.0, _INF)[None]
        vmin = self._range_min(gv)  # (Q, P, L): best second part over j in (i, hi[i]]
        lat = dyn.first(1, self.mask3) - dyn.phi[1][:, :, None] + np.take_along_axis(vmin, self.level, axis=2)
        val = lat if objective == "latency" else dyn.energy(lat)
        if slo is not None:
            val = np.where(lat <= slo, val, _INF)
        for lo, hi in ((0, 1), (1, val.shape[1])):
            part = val[:, lo:hi]
            if part.size == 0:
                continue
            th, i, k = (int(x) for x in np.unravel_index(int(np.argmin(part)), part.shape))
            if not np.isfinite(part[th, i, k]):
                continue
            i += lo
            second = base2[th][:, None] + np.where(self.valid, self.reach[th][:, None] * _zero_inf(h12), _INF)
            j, k2 = self._second_argmin(second, i, int(self.level[th, i, k]))
            yield float(part[th, i - lo, k]), self._choice3(th, i, k, j, k2)

    def _three_throughput(self, dyn: "_Dynamic"):
        """Three tiers, bottleneck objective. Arrays in (position, codec, combo) layout; the second hop's codecs
        sorted by drop at each position (``lv_order``), so level minima are cumulative minima over codecs."""
        t = self._tput_tables()
        f, r, fe, fd, x = dyn.f, t["reach"], dyn.fe, dyn.fd, dyn.fixed  # r: (P, 1, Q)
        src = (f[0] * (self.phic[0] - self.phic[0][:, :1])).T[:, None, :]  # (P, 1, Q)
        src = src + np.where(np.arange(len(src))[:, None, None] > 0, x[0], 0.0)  # the source's stage, if it computes
        a = np.maximum(src + r * fe[0] * t["enc0"], r * t["nb0"] / dyn.bw[0]) + t["mask3"]  # the source and its link
        edge = (f[1] * self.phic[1]).T[:, None, :]  # (P, 1, Q)
        u = r * (fd[1] * t["dec1"] + x[1]) - edge  # the edge's load that depends on the first hop...
        v = edge + r * fe[1] * t["enc1"] + t["mask2"]  # ... and on the second (sorted codecs)
        cloud = (f[2] * (self.phic_n[2][None, :] - self.phic[2].T))[:, None, :]
        w = np.maximum(r * t["nb1"] / dyn.bw[1], r * (fd[2] * t["dec2"] + x[2]) + cloud) + t["mask2"]  # the last link and tier
        res = self._bottleneck_at_input(a[0], u[0], v, w)
        if res is not None:
            yield res
        if len(a) > 1:
            res = self._bottleneck(a[1:], u[1:], v, w)
            if res is not None:
                yield res

    def _tput_tables(self) -> dict[str, np.ndarray]:
        """Static arrays for the throughput search, built on first use."""
        if self._tput is not None:
            return self._tput
        md = self.model
        order = self.lv_order

        def table(x: np.ndarray, sort: bool) -> np.ndarray:  # (P, K) -> (P, K, 1), unusable entries 0
            x = np.where(self.valid, x, 0.0)
            return (np.take_along_axis(x, order, axis=1) if sort else x)[:, :, None]

        mask2 = np.take_along_axis(self.inf_invalid, order, axis=1) + self.inf_tail[2][:, None]
        mask2[0] = _INF  # the second hop is never at the input
        q, p, _ = self.shape
        nl = len(self.levels)
        level = np.ascontiguousarray(self.level.transpose(1, 2, 0))  # (P, K, Q)
        self._tput = {
            "reach": self.reach.T[:, None, :].copy(),
            "enc0": table(md.encode_s[0], False), "nb0": 8.0 * table(md.nbytes[0], False),
            "dec1": table(md.decode_s[1], False), "enc1": table(md.encode_s[1], True),
            "nb1": 8.0 * table(md.nbytes[1], True), "dec2": table(md.decode_s[2], True),
            "mask2": mask2[:, :, None], "mask3": np.ascontiguousarray(self.mask3.transpose(1, 2, 0)),
            "level": level,
            "count": (self.lv_idx.T + 1) * (self.lv_inf.T == 0),  # (L, P): sorted codecs allowed per level
            "take": ((np.arange(1, p)[:, None, None] * nl + level[1:]) * q + np.arange(q)).ravel(),
        }  # fmt: skip
        return self._tput

    def _bottleneck_at_input(self, a, u, v, w):
        """Min of max(a, u + v, w) when the first hop is the input: (K, Q) x (P, K, Q), by input codec."""
        t = self._tput_tables()
        p, kk, q = v.shape
        lev0, ar = t["level"][0], np.arange(kk)[None, :, None]
        best = None
        for k1 in np.flatnonzero(np.isfinite(a).any(axis=1)):
            allowed = ar < t["count"][lev0[k1]].T[:, None, :]  # (P, K, Q)
            allowed[self.hi[0] + 1 :] = False
            obj = np.where(allowed, np.maximum(u[k1] + v, w), _INF).reshape(p * kk, q)
            per = np.maximum(obj.min(axis=0), a[k1])  # (Q,)
            th = int(np.argmin(per))
            if np.isfinite(per[th]) and (best is None or per[th] < best[0]):
                j, ks = divmod(int(np.argmin(obj[:, th])), kk)
                best = (float(per[th]), th, int(k1), j, ks)
        if best is None:
            return None
        value, th, k1, j, ks = best
        return value, self._choice3(th, 0, k1, j, int(self.lv_order[j, ks]))

    def _bottleneck(self, at, ut, vs, ws):
        """Exact min over plans with a cut before the edge of max(a, u + v, w); see the module doc.

        ``at``, ``ut``: (I, K, Q) first parts at hop positions 1..; ``vs``, ``ws``: (P, K, Q) second parts with
        codecs sorted by drop. A level minimum is a cumulative min over codecs and a row gather.
        """
        t = self._tput_tables()
        p, kk, q = vs.shape
        nl = len(self.levels)
        g_rows = (np.arange(p)[:, None] * kk + self.lv_idx).ravel()  # (P*L,): row of (P*K, Q) with each level's min
        inf_lv = self.lv_inf[:, :, None]  # (P, L, 1)
        level, take = t["level"][1:], t["take"]

        def pair_min(tau: float) -> np.ndarray:  # (I, K, Q): min u + v with a, w <= tau (inf if none)
            cm = np.where(ws <= tau, vs, _INF)
            for k in range(1, kk):  # cumulative min over codecs (a loop of slices beats ufunc.accumulate here)
                np.minimum(cm[:, k - 1], cm[:, k], out=cm[:, k])
            g = cm.reshape(p * kk, q)[g_rows].reshape(p, nl, q) + inf_lv  # (P, L, Q)
            best2 = self._range_min(g, axis=0).ravel()[take].reshape(at.shape)
            return np.where(at <= tau, ut + best2, _INF)

        def witness(tau: float, pm: np.ndarray, flat: int) -> tuple[int, int, int, int, int]:
            i, k, th = (int(x) for x in np.unravel_index(flat, pm.shape))
            i += 1
            allowed = np.arange(kk)[None, :] < t["count"][level[i - 1, k, th]][:, None]  # (P, K) sorted codecs
            vals = np.where(allowed & (ws[:, :, th] <= tau), vs[:, :, th], _INF)[i + 1 : self.hi[i] + 1]
            jj, ks = np.unravel_index(int(np.argmin(vals)), vals.shape)
            j = int(jj) + i + 1
            return th, i, k, j, int(self.lv_order[j, ks])

        pm = pair_min(_INF)  # the least edge load ignoring the other stages: a feasible plan, an upper bound
        flat = int(np.argmin(pm))
        if not np.isfinite(pm.flat[flat]):
            return None
        th, i, k, j, k2 = witness(_INF, pm, flat)
        ks = int(np.flatnonzero(self.lv_order[j] == k2)[0])
        hi_val = max(float(at[i - 1, k, th]), float(pm.flat[flat]), float(ws[j, ks, th]))
        hi_plan = (th, i, k, j, k2)
        lo_val = -_INF
        cand = np.concatenate([at[at < hi_val], ws[ws < hi_val]])
        while len(cand):  # bisection by median selection: O(candidates) in all
            mid = float(np.partition(cand, len(cand) // 2)[len(cand) // 2])
            pm = pair_min(mid)
            flat = int(np.argmax(pm <= mid))
            if pm.flat[flat] <= mid:
                hi_val, hi_plan = mid, witness(mid, pm, flat)
                cand = cand[cand < mid]
            else:
                lo_val = mid
                cand = cand[cand > mid]
        if np.isfinite(lo_val):  # inside (lo_val, hi_val) the bottleneck is u + v with a, w <= lo_val
            pm = pair_min(lo_val)
            flat = int(np.argmin(pm))
            if pm.flat[flat] < hi_val:
                hi_val, hi_plan = float(pm.flat[flat]), witness(lo_val, pm, flat)
        return hi_val, self._choice3(*hi_plan)

    # ------------------------------------------------------------------------------------ helpers
    def _exits(self, th: int):
        return self.model.exit_model.exits_of(int(self.rows[th]))

    def _level_min(self, x: np.ndarray) -> np.ndarray:
        """(Q, P, K) -> (Q, P, L): min over the codecs whose drop fits each level (inf if none)."""
        rows = np.arange(x.shape[1])[:, None]
        cm = np.minimum.accumulate(x[:, rows, self.lv_order], axis=2)
        return cm[:, rows, self.lv_idx] + self.lv_inf[None]

    def _second_argmin(self, second: np.ndarray, i: int, level: int) -> tuple[int, int]:
        """argmin over j in (i, hi[i]] and codecs within ``level`` of ``second`` (P, K) for one combo."""
        block = (second + self.inf_level[level])[i + 1 : self.hi[i] + 1]
        jj, kk = np.unravel_index(int(np.argmin(block)), block.shape)
        return int(jj) + i + 1, int(kk)

    def _choice3(self, th: int, i: int, k: int, j: int, k2: int) -> Choice:
        md = self.model
        exits = self._exits(th)
        pj = int(md.hop_pos[j])
        if i == 0:
            return Choice((1, 2), (pj,), (md.codecs[k], md.codecs[k2]), exits)
        return Choice((0, 1, 2), (int(md.hop_pos[i]), pj), (md.codecs[k], md.codecs[k2]), exits)

    def _range_min(self, g: np.ndarray, axis: int = 1) -> np.ndarray:
        """Min over j in (i, hi[i]] of g along ``axis`` (the hop position axis); inf when empty."""
        g = np.moveaxis(g, axis, 0) if axis else g
        if not self.range_limited:
            out = np.empty_like(g)
            out[-1] = _INF
            if len(g) > 1:
                out[-2] = g[-1]
            for i in range(len(g) - 3, -1, -1):
                np.minimum(out[i + 1], g[i + 1], out=out[i])
        else:
            out = np.full_like(g, _INF)
            for i in range(len(g) - 1):
                if self.hi[i] > i:
                    out[i] = g[i + 1 : self.hi[i] + 1].min(axis=0)
        return np.moveaxis(out, 0, axis) if axis else out


class _Dynamic:
    """Arrays for one set of conditions (links, queues, corrections)."""

    def __init__(self, pl: Planner, cond: Conditions):
        md = pl.model
        self.pl = pl
        self.f = np.array([cond.compute_factor.get(nm, 1.0) for nm in md.names])
        self.fixed = np.array([cond.compute_fixed_s.get(nm, 0.0) for nm in md.names])
        self.fe = np.array([cond.codec_factor.get(nm, (1.0, 1.0))[0] for nm in md.names])
        self.fd = np.array([cond.codec_factor.get(nm, (1.0, 1.0))[1] for nm in md.names])
        self.queue = np.array([cond.queue_s.get(nm, 0.0) for nm in md.names])
        self.bw = np.array([lk.bandwidth_bps for lk in cond.links])
        self.inv = np.concatenate([[0.0], np.cumsum(1.0 / self.bw)])  # inv[t]: sum of 1/bw over links 0..t-1
        self.rtt_cum = np.concatenate([[0.0], np.cumsum([lk.rtt_s for lk in cond.links])])
        reply = 8.0 * md.reply_nbytes * self.inv  # (m,)
        self.phi = self.f[:, None, None] * pl.phic - reply[:, None, None] * pl.reach[None]  # (m, Q, P)
        self.phi_n = self.f[:, None] * pl.phic_n  # (m, Q)
        self._busy0: np.ndarray | None = None
        self._energy0: np.ndarray | None = None

    def hop(self, s: int, r: int) -> np.ndarray:
        """(P, K) seconds of a hop from tier s to tier r (relayed through those between); inf where unusable."""
        md = self.pl.model
        return (self.fe[s] * md.encode_s[s] + self.fd[r] * md.decode_s[r] + self.fixed[r]
                + 8.0 * md.nbytes[s] * (self.inv[r] - self.inv[s]) + (self.rtt_cum[r] - self.rtt_cum[s]) + self.queue[r])  # fmt: skip

    def first(self, r: int, mask: np.ndarray) -> np.ndarray:
        """(Q, P, K): the source's part and the first hop (to tier r), plus ``mask`` (its constraints)."""
        src = self.phi[0] - self.phi[0][:, :1]  # (Q, P)
        src[:, 1:] += self.queue[0] + self.fixed[0]  # the source queues, and its stage costs, when it computes
        return src[:, :, None] + self.pl.reach3 * _zero_inf(self.hop(0, r))[None] + mask

    def nbytes8(self, s: int) -> np.ndarray:
        return np.where(self.pl.valid, 8.0 * self.pl.model.nbytes[s], 0.0)[None]

    def decode(self, r: int) -> np.ndarray:
        return np.where(self.pl.valid, self.fd[r] * self.pl.model.decode_s[r], 0.0)[None]

    def busy0(self) -> np.ndarray:
        """(Q, P, K): the source's busy seconds (compute, heads, encoding the first hop)."""
        if self._busy0 is None:
            pl = self.pl
            comp = self.f[0] * (pl.phic[0] - pl.phic[0][:, :1])
            comp[:, 1:] += self.fixed[0]
            self._busy0 = comp[:, :, None] + pl.reach3 * np.where(pl.valid, self.fe[0] * pl.model.encode_s[0], 0.0)[None]
        return self._busy0

    def energy(self, lat: np.ndarray) -> np.ndarray:
        """(Q, P, K) source energy given the latency of the best continuation (inf where infeasible)."""
        pw = self.pl.model.tiers[0].power
        if self._energy0 is None:  # the part that does not depend on the continuation
            tx = self.pl.reach3 * self.nbytes8(0) / self.bw[0]
            self._energy0 = (pw.active_w - pw.idle_w) * self.busy0() + (pw.transmit_w - pw.idle_w) * tx
        if pw.idle_w > 0:
            return pw.idle_w * lat + self._energy0  # inf stays inf
        return _finite_or_inf(lat, self._energy0)


def _zero_inf(x: np.ndarray) -> np.ndarray:
    """x with infinities replaced by 0 (so that 0 * x stays 0); add the inf mask back separately."""
    return np.where(np.isfinite(x), x, 0.0)


def _finite_or_inf(mask: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(mask), x, _INF)


def _why_none(md: CostModel, objective: str, slo: float | None) -> str:
    parts = [f"accuracy floor {md.max_accuracy_drop_pts:g} pts below the full model"]
    if md.privacy:
        parts.append("privacy (the source must compute)")
    caps = [f"{t.name} {t.memory_cap_nbytes:.0f} B" for t in md.tiers if t.memory_cap_nbytes is not None]
    if caps:
        parts.append("memory caps " + ", ".join(caps))
    if slo is not None:
        parts.append(f"latency SLO {slo * 1e3:.1f} ms")
    return f"no feasible plan for objective {objective!r} under: " + "; ".join(parts)


def search(
    model: CostModel, cond: Conditions, objective: str = "latency", *, latency_slo_s: float | None = None, top_k: int = 3
) -> SearchResult:
    """One-off search; build a :class:`Planner` once to re-plan cheaply as conditions change."""
    return Planner(model).search(cond, objective, latency_slo_s=latency_slo_s, top_k=top_k)
