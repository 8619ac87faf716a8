"""The platforms as locust users: StarGame players spinning, and OIA platform
sessions playing signed rounds with the odd retry, cancel and status call.

Players come from the file the runner writes (WALLETD_BENCH_PLAYERS); each
user is one player, a hot one HOT_SHARE of the time. WALLETD_BENCH_USER_RPS
sets each user's pace (constant throughput), so the offered rate is fixed.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from pathlib import Path

import msgspec
from locust import FastHttpUser, constant_throughput, task

from bench import fixtures

PLAYERS = fixtures.read_players(Path(os.environ["WALLETD_BENCH_PLAYERS"]))
PICK = fixtures.Picker(PLAYERS, seed=int(time.time()))
USER_RPS = float(os.environ.get("WALLETD_BENCH_USER_RPS", "5"))
# Unique across runs and locust processes on one Redis: microseconds at start-up.
IDS = itertools.count(time.time_ns() // 1000)
RETRY_SHARE, CANCEL_SHARE, STATUS_SHARE, WIN_SHARE = 0.05, 0.03, 0.05, 1 / 3


class Answer(msgspec.Struct):
    status: str
    data: dict = {}


class Envelope(msgspec.Struct):
    response: Answer


DECODE = msgspec.json.Decoder(Envelope).decode


class OiaPlatform(FastHttpUser):
    """authenticate, balance, then rounds of BET and WIN (IDs new per request)."""

    weight = 2
    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        self.player, self.token, _ = PICK()
        self.call("authenticate", {"token": self.token})
        self.call("balance", {"token": self.token, "currency_code": fixtures.CURRENCY, "user_id": self.player})

    def call(self, command: str, data: dict, name: str = "", expect: str = "OK") -> dict:
        body = fixtures.oia_body(command, data)
        with self.client.post(f"/oia/{command}", data=body, headers=fixtures.oia_headers(command),
                              name=name or command, catch_response=True) as reply:
            try:
                answer = DECODE(reply.content).response
            except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
                reply.failure(f"HTTP {reply.status_code}: {reply.content[:200]!r}")
                return {}
            wanted = answer.data.get("transaction_status", answer.status) if command in ("cancel", "status") \
                else answer.status
            if wanted != expect:
                reply.failure(f"{command}: {answer.data}")
            return answer.data

    @task(10)
    def round(self) -> None:
        tx = next(IDS)
        bet = fixtures.change_data(self.player, self.token, "BET", tx, tx)
        first = self.call("changebalance", bet, "changebalance BET")
        if random.random() < RETRY_SHARE:
            again = self.call("changebalance", bet, "changebalance BET retry")
            if again != first:
                self.environment.events.request.fire(
                    request_type="CHECK", name="retry answers as the original", response_time=0,
                    response_length=0, exception=AssertionError(f"{first} != {again}"))
        if random.random() < CANCEL_SHARE:
            self.call("cancel", {"user_id": self.player, "transaction_id": tx, "round_id": tx,
                                 "game_id": fixtures.GAME_ID, "round_finished": True}, expect="CANCELED")
            return
        if random.random() < WIN_SHARE:
            win = fixtures.change_data(self.player, None, "WIN", next(IDS), tx, amount="2.00")
            self.call("changebalance", win, "changebalance WIN")
        if random.random() < STATUS_SHARE:
            self.call("status", {"user_id": self.player, "transaction_id": tx})


class StarGamePlatform(FastHttpUser):
    """getBalance at launch, then spins: a bet, and a win on about a third."""

    weight = 1
    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        self.uid = PICK()[0]
        self.get("getBalance", "")

    def get(self, cmd: str, amounts: str) -> None:
        with self.client.get(f"/stargame?cmd={cmd}&uid={self.uid}{amounts}", name=f"stargame {cmd}",
                             catch_response=True) as reply:
            if b'"status":"success"' not in (reply.content or b""):
                reply.failure(f"HTTP {reply.status_code}: {reply.content[:200]!r}")

    @task
    def spin(self) -> None:
        self.get("writeBet", "&bet=100&win=0")
        if random.random() < WIN_SHARE:
            self.get("writeBet", "&bet=0&win=200")
