"""The synthetic world: interest clusters, users with planted interests, their boards, and pins.

Cheap to build and image-free, so `gen pins` and `gen interactions` rebuild the same world from
the same arguments and agree on every id.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from streams.workload.themes import TOPICS, Theme, make_theme

ZIPF_EXPONENT = 1.1
# Probabilities of a user holding 1, 2 or 3 planted interest clusters.
_INTEREST_COUNT_WEIGHTS = (0.3, 0.45, 0.25)


@dataclass(frozen=True)
class Cluster:
    """An interest cluster: what its pins look like and the words used to describe them."""

    cluster_id: int
    name: str
    theme: Theme
    vocabulary: tuple[str, ...]
    weight: float  # relative share of pins and followers


@dataclass(frozen=True)
class Interest:
    cluster_id: int
    weight: float


@dataclass(frozen=True)
class Board:
    board_id: str
    user_id: str
    cluster_id: int
    title: str


@dataclass(frozen=True)
class User:
    user_id: str
    interests: tuple[Interest, ...]  # heaviest first; weights sum to 1
    board_ids: tuple[str, ...]
    activity: float  # relative session rate, mean about 1


@dataclass(frozen=True)
class Pin:
    pin_id: str
    index: int
    creator_id: str
    board_id: str
    cluster_id: int
    popularity_rank: int  # 0 = the most popular pin of its cluster
    seed: int  # drives this pin's text and image, independently of every other pin


@dataclass(frozen=True)
class World:
    seed: int
    clusters: tuple[Cluster, ...]
    users: tuple[User, ...]
    boards: tuple[Board, ...]
    pins: tuple[Pin, ...]
    cluster_pins: tuple[tuple[int, ...], ...]  # pin indices per cluster, most popular first

    def board(self, board_id: str) -> Board:
        return self.boards[board_index(board_id)]

    def pin(self, pin_id: str) -> Pin:
        return self.pins[int(pin_id[1:]) - 1]


def pin_id_for(index: int) -> str:
    return f"p{index + 1:08d}"


def user_id_for(index: int) -> str:
    return f"u{index + 1:07d}"


def board_id_for(index: int) -> str:
    return f"b{index + 1:08d}"


def board_index(board_id: str) -> int:
    return int(board_id[1:]) - 1


def zipf_weights(count: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    """Unnormalised Zipf weights of ranks 0..count-1."""
    return [1.0 / (rank + 1) ** exponent for rank in range(count)]


def substream(seed: int, purpose: str) -> random.Random:
    """An independent generator per purpose, so that e.g. more pins never reshuffle the users."""
    # A str seed is hashed with SHA-512 by `random`, stable across runs and hash seeds.
    return random.Random(f"pinstream:{seed}:{purpose}")


def build_world(
    seed: int, users: int, pins: int, clusters: int = 16, boards_per_user: int = 3
) -> World:
    """The world described by these arguments; the same arguments always give the same world."""
    if users <= 0 or pins <= 0 or clusters <= 0 or boards_per_user <= 0:
        raise ValueError("users, pins, clusters and boards_per_user must all be positive")
    cluster_list = _build_clusters(substream(seed, "clusters"), clusters)
    # Clusters that will hold no pin (pins < clusters) are never planted as interests.
    live = list(range(min(clusters, pins)))
    user_list, board_list = _build_users(
        substream(seed, "users"), users, cluster_list, live, boards_per_user
    )
    pin_list, cluster_pins = _build_pins(
        substream(seed, "pins"), pins, cluster_list, user_list, board_list
    )
    return World(
        seed=seed,
        clusters=tuple(cluster_list),
        users=tuple(user_list),
        boards=tuple(board_list),
        pins=pin_list,
        cluster_pins=cluster_pins,
    )


def _build_clusters(rng: random.Random, count: int) -> list[Cluster]:
    order = list(range(len(TOPICS)))
    rng.shuffle(order)
    result = []
    for cluster_id in range(count):
        reuse, slot = divmod(cluster_id, len(order))
        topic = TOPICS[order[slot]]
        name = topic.slug if reuse == 0 else f"{topic.slug}-{reuse + 1}"
        result.append(
            Cluster(
                cluster_id=cluster_id,
                name=name,
                theme=make_theme(topic, reuse, rng),
                vocabulary=topic.words,
                weight=rng.lognormvariate(0.0, 0.5),
            )
        )
    return result


def _build_users(
    rng: random.Random, count: int, clusters: list[Cluster], live: list[int], boards_per_user: int
) -> tuple[list[User], list[Board]]:
    live_weights = [clusters[c].weight for c in live]
    users: list[User] = []
    boards: list[Board] = []
    for index in range(count):
        user_id = user_id_for(index)
        wanted = rng.choices((1, 2, 3), weights=_INTEREST_COUNT_WEIGHTS)[0]
        chosen: list[int] = []
        while len(chosen) < min(wanted, len(live)):
            cluster_id = rng.choices(live, weights=live_weights)[0]
            if cluster_id not in chosen:
                chosen.append(cluster_id)
        raw = sorted((rng.gammavariate(2.0, 1.0) for _ in chosen), reverse=True)
        interests = tuple(
            Interest(cluster_id=c, weight=w / sum(raw)) for c, w in zip(chosen, raw, strict=True)
        )
        # One board per interest first, then extra boards on random interests.
        board_clusters = chosen[:boards_per_user] + [
            rng.choice(chosen) for _ in range(boards_per_user - len(chosen))
        ]
        board_ids = []
        for cluster_id in board_clusters:
            board_id = board_id_for(len(boards))
            words = rng.sample(clusters[cluster_id].vocabulary, 2)
            title = f"{words[0].capitalize()} {words[1]}"
            boards.append(Board(board_id, user_id, cluster_id, title))
            board_ids.append(board_id)
        # Log-normal with mean 1: a few very active users, many occasional ones.
        activity = rng.lognormvariate(-0.28125, 0.75)
        users.append(User(user_id, interests, tuple(board_ids), activity))
    return users, boards


def _build_pins(
    rng: random.Random,
    count: int,
    clusters: list[Cluster],
    users: list[User],
    boards: list[Board],
) -> tuple[tuple[Pin, ...], tuple[tuple[int, ...], ...]]:
    followers: list[list[int]] = [[] for _ in clusters]
    for user_index, user in enumerate(users):
        for interest in user.interests:
            followers[interest.cluster_id].append(user_index)
    # Every cluster gets a pin before any gets a second one, so small worlds use all clusters.
    first = list(range(min(count, len(clusters))))
    rng.shuffle(first)
    weights = [c.weight for c in clusters]
    pin_clusters = first + rng.choices(range(len(clusters)), weights=weights, k=count - len(first))
    members: list[list[int]] = [[] for _ in clusters]
    drafts = []
    for index, cluster_id in enumerate(pin_clusters):
        pool = followers[cluster_id]
        creator = users[rng.choice(pool)] if pool else users[rng.randrange(len(users))]
        own = [b for b in creator.board_ids if boards[board_index(b)].cluster_id == cluster_id]
        board_id = rng.choice(own) if own else creator.board_ids[0]
        drafts.append((creator.user_id, board_id, rng.getrandbits(63)))
        members[cluster_id].append(index)
    rank_of = [0] * count
    ordered: list[tuple[int, ...]] = []
    for member_list in members:
        rng.shuffle(member_list)
        for rank, index in enumerate(member_list):
            rank_of[index] = rank
        ordered.append(tuple(member_list))
    pins = tuple(
        Pin(pin_id_for(i), i, creator_id, board_id, pin_clusters[i], rank_of[i], pin_seed)
        for i, (creator_id, board_id, pin_seed) in enumerate(drafts)
    )
    return pins, tuple(ordered)
