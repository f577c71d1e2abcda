"""The budgets stage: reserve the worst case against every matching budget, settle after the call.

Before the call, one all-or-nothing ``reserve`` holds the request's worst-case cost against every
budget that applies (and any limits other stages added, such as the breaker's session cap); a
refusal is a 429 naming the budget and nothing is held anywhere. The same script first increments
the counters other stages added (the breaker's session counters, ``counters.py``) and refuses
with their trip, holding nothing: one store round trip before the call (plus the runtime limits
map, re-read every ``runtime_refresh_s``). After the call, one ``commit_and_release`` (one script)
*commits* the actual cost (a success; a cascade's paid cheap attempt even on failure) and
*releases* the hold, idempotent by call id, so repeated or replayed callbacks never charge twice.

Store outage: ``fail_closed`` answers 503; ``fail_open`` admits within an outage allowance (each
limit's ``outage_headroom_share`` of the headroom this replica last saw from the store, worst cases
held in process; see ``outage.py``) and past it answers 503 like ``fail_closed``. The post-call work
that could not reach the store waits in a local queue that is replayed, in order, once the store
answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from costkit_litellm.accounting.metrics import CostKitMetrics
from costkit_litellm.budgets import counters
from costkit_litellm.budgets.alerts import Alerter
from costkit_litellm.budgets.config import BudgetSettings
from costkit_litellm.budgets.outage import OutageAllowance
from costkit_litellm.budgets.policy import RUNTIME_MAP, AppliedBudget, BudgetPolicy, parse_runtime_limits
from costkit_litellm.context import RequestContext
from costkit_litellm.errors import RequestAnswered, RequestRejected
from costkit_litellm.money import format_usd, usd_to_nano
from costkit_litellm.pipeline import Admission, Outcome
from costkit_litellm.pricing import Pricing
from costkit_litellm.redact import mask_url
from costkit_litellm.store import Limit, LimitUsage, Store, StoreError

log = logging.getLogger("costkit.budgets")

HEADER_REMAINING = "x-costkit-budget-remaining-usd"
HEADER_DOWNGRADED = "x-costkit-downgraded"
STATE_KEY = "budgets"
MAX_PENDING = 100_000
_Operation = tuple[str, str, int, list[Limit]]
"""(``commit`` | ``release``, call id, amount, limits): the unit of the outage queue and of the spool
(a release carries the limits reserved, so its replay needs no read of the reservation)."""


def _limit_json(limit: Limit) -> dict[str, Any]:
    return {"key": limit.key, "cap": limit.cap, "expires_at": limit.expires_at, "window_s": limit.window_s}


def _limit_from_json(raw: Mapping[str, Any]) -> Limit:
    return Limit(key=raw["key"], cap=int(raw["cap"]), expires_at=raw.get("expires_at"), window_s=raw.get("window_s"))


class BudgetStage:
    """Hard dollar caps: reserve before, commit and release after, with an outage policy."""

    name = "budgets"

    def __init__(
        self,
        policy: BudgetPolicy,
        store: Store,
        pricing: Callable[[], Pricing],
        metrics: CostKitMetrics | None = None,
        store_url: str | None = None,
    ) -> None:
        self.policy = policy
        self.settings: BudgetSettings = policy.settings
        self._store = store
        self._pricing = pricing
        self._metrics = metrics
        self._store_label = mask_url(store_url) if store_url else "the in-process store"
        self._alerter = Alerter(store, policy, metrics)
        self._alerts = any(b.action == "alert" for b in policy.budgets)
        """Only alert budgets are checked after a success (the others have no thresholds to report)."""
        self._runtime: dict[str, int] = {}
        self._runtime_read_at = float("-inf")
        self._pending: deque[_Operation] = deque()
        self._flushing = asyncio.Lock()
        self._outage = OutageAllowance(self.settings.outage_headroom_share)

    # --- before the call ----------------------------------------------------------------
    async def runtime_limits(self) -> Mapping[str, int]:
        """Caps set at runtime (``costkit budgets set``), re-read every ``runtime_refresh_s``."""
        now = time.monotonic()
        if now - self._runtime_read_at >= self.settings.runtime_refresh_s:
            raw = await self._store.map_get_all(RUNTIME_MAP)
            self._runtime = parse_runtime_limits(raw)
            self._runtime_read_at = now
        return self._runtime

    async def on_request(self, admission: Admission) -> None:
        """Count the pending counters and hold the worst case against every applicable budget, in
        one round trip; or refuse (a counter's trip first)."""
        try:
            applied = self.policy.applicable(admission.context, await self.runtime_limits())
        except StoreError as exc:
            counters.unreachable(admission)  # as when the breaker could not count (fail_closed: its 503)
            self._store_failed("runtime_limits", exc)
            applied = self.policy.applicable(admission.context, self._runtime)
        if not applied and not admission.extra_limits:
            await counters.count_pending(self._store, admission)
            return
        await self._flush_pending()
        if admission.estimate.unbounded is None and any(a.budget.action == "downgrade" for a in applied):
            await self._maybe_downgrade(admission, applied)
        amount = await self._amount(admission, applied)
        if amount is None:
            return
        for budget in applied:
            if budget.caps and amount > budget.limit:
                await counters.count_pending(self._store, admission)  # a trip comes first
                self._count_rejection(budget.budget.name, "too_large")
                raise RequestRejected(
                    self.policy.too_large_message(budget, amount, admission.context.params.max_tokens),
                    status=400,
                    error_type="budget_request_too_large",
                )
        limits = self._limits(applied, admission)
        call_id = admission.context.call_id or ""
        state: dict[str, Any] = {
            "limits": [_limit_json(x) for x in limits],
            "amount": amount,
            "budgets": [a.budget.name for a in applied],
        }
        admission.state[STATE_KEY] = state
        epoch, clean = self._outage.epoch, not self._pending
        groups, pending = counters.pending(admission)
        try:
            result = await self._store.reserve(call_id, amount, limits, self.settings.lease_s, counters=pending)
        except asyncio.CancelledError:  # the script may still run
            self._release_later(call_id, limits)
            raise
        except StoreError as exc:
            if exc.uncertain:  # the reservation may still land (its reply was lost)
                self._release_later(call_id, limits)
            if pending:  # nothing was counted: as when the breaker's own count failed, before the budgets ran
                counters.unreachable(admission)  # fail_closed: the breaker's 503
                limits = self._limits(applied, admission)
                if not limits:
                    del admission.state[STATE_KEY]
                    return
                state["limits"] = [_limit_json(x) for x in limits]
            self._store_failed("reserve", exc)
            if self.settings.on_store_error == "fail_closed":
                self._count_rejection("*", "store_unavailable")
                raise RequestRejected(
                    f"Budgets cannot be enforced right now: {self._store_label} does not answer, and "
                    "costkit is configured to refuse requests then (budget_settings.on_store_error: "
                    "fail_closed). Retry shortly.",
                    status=503,
                    error_type="budget_store_unavailable",
                    headers={"Retry-After": "5"},
                ) from None
            self._admit_in_outage(call_id, amount, limits, applied, admission)
            state["unreserved"] = True
            state["outage_hold"] = True
            log.warning("costkit: admitting %s against the outage allowance (fail_open): %s", call_id, exc)
            return
        counters.mark_counted(groups)
        if result.tripped is not None:  # counted, nothing held: the trip is the refusal
            del admission.state[STATE_KEY]
            raise counters.trip(groups, result.tripped, result.counts)
        if result.collision:  # ids are the pack's own uuid4s: never a client's doing
            log.error("costkit: request id %s is already known to the store; refusing it", call_id)
            raise RequestRejected(
                "This request's id is already in use; nothing was held or charged. Retry the request.",
                status=409,
                error_type="budget_request_id_in_use",
            )
        if not result.ok:
            if result.denied is not None:
                self._outage.observe(limits, [result.denied], reset_spent=False)
            raise self._refusal(result.denied, applied, admission, amount)
        self._outage.observe(
            limits, result.usages, reset_spent=clean and epoch == self._outage.epoch and not self._pending
        )
        state["held"] = True
        self._report_remaining(admission, applied, result.usages)

    def _release_later(self, call_id: str, limits: Sequence[Limit]) -> None:
        """Queue the release of a reservation that may have landed without our knowing; the queue is
        replayed by the next call that reaches the store (a release of nothing changes nothing)."""
        self._pending.append(("release", call_id, 0, list(limits)))

    @staticmethod
    def _limits(applied: Sequence[AppliedBudget], admission: Admission) -> list[Limit]:
        """Every limit to hold: the budgets', then those other stages added."""
        return [a.to_limit() for a in applied] + [limit for limit, _ in admission.extra_limits]

    def _admit_in_outage(
        self,
        call_id: str,
        amount: int,
        limits: Sequence[Limit],
        applied: Sequence[AppliedBudget],
        admission: Admission,
    ) -> None:
        """Hold ``amount`` against this replica's outage allowance, or refuse like fail_closed."""
        exhausted = self._outage.exhausted(amount, limits)
        if not exhausted:
            self._outage.hold(call_id, amount, limits)
            return
        names = {a.key: a.budget.name for a in applied}
        labels = [repr(names[key]) if key in names else f"limit {key!r}" for key in exhausted]
        first = exhausted[0]
        self._count_rejection(names.get(first, "*"), "outage_allowance")
        never_seen = self._outage.allowance(first) is None
        why = (
            "this replica has not read it from the store before the outage, so it has no outage allowance"
            if never_seen
            else "this replica's outage allowance for it is used up (budget_settings.outage_headroom_share "
            f"= {self.settings.outage_headroom_share:g} of the headroom last seen)"
        )
        raise RequestRejected(
            f"Budgets cannot be enforced right now: {self._store_label} does not answer, and for "
            f"{', '.join(labels)} {why}; costkit refuses further requests until the store answers "
            "(budget_settings.on_store_error: fail_open). Retry shortly.",
            status=503,
            error_type="budget_store_unavailable",
            headers={"Retry-After": "5"},
        )

    async def renew(self, request_id: str, admission: Admission) -> None:
        """Push back a live request's lease (a stream still running); a store error is only counted."""
        state = admission.state.get(STATE_KEY)
        if not isinstance(state, Mapping) or not state.get("held"):
            return
        try:
            await self._store.renew(request_id, self.settings.lease_s)
        except StoreError as exc:
            self._store_failed("renew", exc)

    async def _amount(self, admission: Admission, applied: Sequence[AppliedBudget]) -> int | None:
        """What to hold; None when nothing is left to hold (see ``_still_held``)."""
        endpoint = admission.estimate.unbounded
        if endpoint is not None:
            if self.settings.unbounded_calls == "reserve":
                return usd_to_nano(self.settings.unbounded_reserve_usd)
            if not await self._still_held(admission, applied):
                return None
            names = ", ".join(repr(a.budget.name) for a in applied) or "the session limit"
            self._count_rejection(applied[0].budget.name if applied else "*", "unbounded")
            raise RequestRejected(
                f"The cost of a {endpoint!r} call cannot be bounded before it is sent, so it cannot be held "
                f"against {names}; costkit refuses such calls under a budget "
                "(budget_settings.unbounded_calls: reject). Set unbounded_calls: reserve to hold "
                "budget_settings.unbounded_reserve_usd per call instead.",
                status=400,
                error_type="budget_unbounded_call",
            )
        if admission.estimate.amount is not None:
            return admission.estimate.amount
        if self.settings.unknown_price == "reserve":
            return usd_to_nano(self.settings.unknown_price_reserve_usd)
        if not await self._still_held(admission, applied):
            return None
        names = ", ".join(repr(a.budget.name) for a in applied) or "the session limit"
        self._count_rejection(applied[0].budget.name if applied else "*", "price_unknown")
        raise RequestRejected(
            f"Model {admission.model or admission.context.model!r} has no known price, so its cost cannot be "
            f"held against {names}; add it under costkit.pricing.models, or set "
            "budget_settings.unknown_price: reserve.",
            status=400,
            error_type="budget_price_unknown",
        )

    async def _still_held(self, admission: Admission, applied: Sequence[AppliedBudget]) -> bool:
        """Before refusing without a reservation: count the pending counters first (a trip wins, as
        when the breaker counted before the budgets ran). If the store did not answer them
        (fail_open), the session limit they guard is gone, and with no budget left there is nothing
        to hold, hence nothing to refuse."""
        await counters.count_pending(self._store, admission)
        return bool(applied or admission.extra_limits)

    async def _maybe_downgrade(self, admission: Admission, applied: Sequence[AppliedBudget]) -> None:
        # A round trip of its own (the usage read) anyway: count the pending counters first, so a
        # trip refuses before anything is downgraded, as when the breaker counted first.
        await counters.count_pending(self._store, admission)
        candidates = [a for a in applied if a.budget.action == "downgrade"]
        try:
            usages = await self._store.usage([a.to_limit() for a in candidates])
        except StoreError as exc:
            self._store_failed("usage", exc)
            return
        for budget, usage in zip(candidates, usages, strict=True):
            target = budget.budget.downgrade_to
            current = admission.model or admission.context.model
            left = budget.limit - usage.committed - usage.reserved
            if target and target != current and left < budget.limit * budget.budget.downgrade_below:
                params = admission.context.params
                admission.estimate = self._pricing().worst_case(
                    target, admission.estimate.prompt_tokens, params.max_tokens, params.n
                )
                admission.model = target
                admission.headers[HEADER_DOWNGRADED] = f"{budget.budget.name}: {current} -> {target}"
                if self._metrics is not None:
                    self._metrics.downgraded(budget.budget.name)
                return

    def _refusal(
        self, denied: LimitUsage | None, applied: Sequence[AppliedBudget], admission: Admission, amount: int
    ) -> RequestRejected | RequestAnswered:
        key = denied.key if denied is not None else None
        for budget in applied:
            if budget.key == key and denied is not None:
                self._count_rejection(budget.budget.name, "exceeded")
                retry = self.policy.retry_after(budget)
                return RequestRejected(
                    self.policy.exceeded_message(budget, denied, amount),
                    status=429,
                    error_type="budget_exceeded",
                    headers={"Retry-After": str(retry)} if retry else None,
                )
        for limit, refuse in admission.extra_limits:
            if limit.key == key and denied is not None:
                return refuse(denied)
        return RequestRejected("A budget refused this request.", status=429, error_type="budget_exceeded")

    def _report_remaining(
        self, admission: Admission, applied: Sequence[AppliedBudget], usages: Sequence[LimitUsage]
    ) -> None:
        by_key = {u.key: u for u in usages}
        tightest: int | None = None
        for budget in applied:
            usage = by_key.get(budget.key)
            if usage is None:
                continue
            left = max(0, budget.limit - usage.committed - usage.reserved)
            if self._metrics is not None:
                self._metrics.budget_remaining(
                    budget.budget.name, budget.value, left, _trusted(budget, admission.context)
                )
            if budget.caps:
                tightest = left if tightest is None else min(tightest, left)
        if tightest is not None:
            admission.headers[HEADER_REMAINING] = format_usd(tightest)

    # --- after the call -----------------------------------------------------------------
    async def on_outcome(self, outcome: Outcome) -> None:
        """Commit the actual cost and release the hold (success), or release it (failure)."""
        state = outcome.state.get(STATE_KEY)
        call_id = outcome.context.call_id
        if not isinstance(state, Mapping) or not call_id:
            return
        limits = [_limit_from_json(x) for x in state.get("limits", [])]
        if outcome.kind == "failure" and not outcome.final:
            # A retry or a fallback may still run on this hold: the final outcome settles it. An
            # attempt that cost something (a stream the provider broke off) is charged now, once.
            if outcome.cost and not outcome.settle_only and isinstance(state, dict):
                await self._charge_attempt(call_id, state, outcome.cost, limits)
            return
        operations: list[_Operation] = []
        routing = outcome.state.get("routing")
        escalated = int(routing.get("escalated_cost", 0)) if isinstance(routing, Mapping) else 0
        if outcome.kind == "success":
            cost = outcome.cost if outcome.cost is not None else int(state.get("amount", 0))
            operations.append(("commit", call_id, cost + escalated, limits))
            self._check_overrun(call_id, state, cost + escalated)
        else:  # a cascade's cheap attempt was paid even if the escalated call failed
            paid = escalated + (0 if outcome.settle_only else int(outcome.cost or 0))
            if paid:
                operations.append(("commit", call_id, paid, limits))
        operations.append(("release", call_id, 0, limits))
        spent = sum(op[2] for op in operations)
        if self._pending:  # the store was down: keep the order of the queue
            self._pending.extend(operations)
            self._outage.settle(call_id, spent, recorded=False)
            await self._flush_pending()
            return
        try:
            await self._run_many(operations)  # one round trip: commit and release in one script
        except StoreError as exc:
            self._store_failed(operations[0][0], exc)
            self._pending.extend(operations)  # nothing of it happened (atomic), or a replay changes nothing
            self._outage.settle(call_id, spent, recorded=False)
            return
        self._outage.settle(call_id, spent, recorded=True)
        if outcome.kind == "success" and self._alerts:
            applied = self.policy.applicable(outcome.context, self._runtime)
            try:
                await self._alerter.check(applied)
            except StoreError as exc:
                self._store_failed("alerts", exc)

    async def _charge_attempt(self, call_id: str, state: dict[str, Any], cost: int, limits: list[Limit]) -> None:
        """Commit a failed attempt's cost under an id of its own (``<call id>:attempt:<n>``), the
        request's hold left as it is: the request's own commit, once per id, is still to come."""
        attempt = int(state.get("attempts_charged", 0)) + 1
        state["attempts_charged"] = attempt
        operation: _Operation = ("commit", f"{call_id}:attempt:{attempt}", cost, limits)
        if not self._pending:
            try:
                await self._run_many([operation])
                return
            except StoreError as exc:
                self._store_failed("commit", exc)
        self._pending.append(operation)  # replayed in order, idempotent by its id
        self._outage.spend(cost, limits)
        await self._flush_pending()

    def _check_overrun(self, call_id: str, state: Mapping[str, Any], spent: int) -> None:
        """A commit above the hold is committed in full (budgets record true spend), counted and logged."""
        held = int(state.get("amount", 0))
        if not state.get("held") or spent <= held:
            return
        names = [str(name) for name in state.get("budgets", [])]
        log.warning(
            "costkit: request %s cost %s, more than the %s held (budgets: %s)",
            call_id,
            format_usd(spent),
            format_usd(held),
            ", ".join(names) or "-",
        )
        if self._metrics is not None:
            for name in names:
                self._metrics.overran(name, spent - held)

    async def _run_many(self, operations: Sequence[_Operation]) -> int:
        """Run the first operation, with the next one when they are a call's commit and release (one
        ``commit_and_release``); how many operations ran. A release always carries the limits
        reserved (one script, no read of the reservation); a lone commit is a ``commit``."""
        kind, call_id, amount, limits = operations[0]
        if kind == "release":
            await self._store.commit_and_release(call_id, None, limits)
            return 1
        following = operations[1] if len(operations) > 1 else None
        if following is not None and following[:2] == ("release", call_id) and following[3] == limits:
            await self._store.commit_and_release(call_id, amount, limits)
            return 2
        await self._store.commit(call_id, amount, limits)
        return 1

    async def _flush_pending(self) -> None:
        """Replay queued commits and releases in order (a call's commit and release as one script),
        one flusher at a time; stop at a store error."""
        if not self._pending or self._flushing.locked():
            return
        async with self._flushing:
            while self._pending:
                try:
                    ran = await self._run_many([self._pending[i] for i in range(min(2, len(self._pending)))])
                except StoreError as exc:
                    self._store_failed("replay", exc)
                    while len(self._pending) > MAX_PENDING:
                        dropped = self._pending.popleft()
                        log.error("costkit: outage queue full, dropping %s of %s", dropped[0], dropped[1])
                    return
                for _ in range(ran):
                    self._pending.popleft()
            log.warning("costkit: store is back; replayed the spend recorded during the outage")

    async def flush(self) -> int:
        """Replay the outage queue now, waiting for a flush already running (shutdown, start-up);
        returns how many operations still wait (the store still does not answer)."""
        if self._flushing.locked():
            async with self._flushing:
                pass
        await self._flush_pending()
        return len(self._pending)

    def take_pending(self) -> list[dict[str, Any]]:
        """Empty the outage queue into JSON-ready records, oldest first (spooled at shutdown)."""
        records = [
            {"op": kind, "call_id": call_id, "amount": amount, "limits": [_limit_json(x) for x in limits]}
            for kind, call_id, amount, limits in self._pending
        ]
        self._pending.clear()
        return records

    def restore_pending(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Queue spooled records ahead of anything queued since (they happened first); replayed
        like any queued operation, idempotent by call id."""
        operations: list[_Operation] = [
            (str(r["op"]), str(r["call_id"]), int(r["amount"]), [_limit_from_json(x) for x in r["limits"]])
            for r in records
            if r.get("op") in ("commit", "release")
        ]
        self._pending.extendleft(reversed(operations))

    @property
    def pending(self) -> int:
        """Post-call operations waiting for the store to come back."""
        return len(self._pending)

    def _store_failed(self, operation: str, exc: StoreError) -> None:
        log.warning("costkit: store %s failed: %s", operation, exc)
        if self._metrics is not None:
            self._metrics.store_error(operation)

    def _count_rejection(self, budget: str, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.rejected(budget, reason)


def _trusted(budget: AppliedBudget, context: RequestContext) -> bool:
    """Whether a budget's scope value came from the authenticated key or the budget's own config
    (a remaining-budget series of its own), not from what the client asserted."""
    config = budget.budget
    if (
        config.scope in ("global", "api_key", "team")
        or budget.value in config.values
        or budget.value in config.overrides
    ):
        return True
    if config.scope == "user":
        return config.identity == "authenticated" or budget.value == context.key_user_id
    return False
