-- The index of a Berth store (storage/meta/postgres; see schema.go).
--
-- Keys are text in the "C" collation, so that they sort by their bytes as
-- the API's pages and the embedded index do. Records are json (not jsonb:
-- an annotation may hold a \u0000, which jsonb refuses), encoded as the
-- embedded index encodes them, so that times keep their nanoseconds and a
-- record can grow a field without a migration.

-- Content present in the blob store.
CREATE TABLE blobs (
	digest text COLLATE "C" PRIMARY KEY,
	rec    json NOT NULL
);

-- A repository exists from its first link or manifest until it is deleted;
-- it cannot be deleted while it holds a link, a manifest or a tag.
CREATE TABLE repositories (
	name text COLLATE "C" PRIMARY KEY CHECK (name <> '')
);

CREATE TABLE links (
	repo   text COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE RESTRICT,
	digest text COLLATE "C" NOT NULL,
	rec    json NOT NULL,
	PRIMARY KEY (repo, digest)
);
CREATE INDEX links_by_digest ON links (digest, repo);

-- subject is the digest of the record's subject, written with it (not
-- generated from it: json operators refuse a record whose annotations
-- hold a \u0000): the referrers of a subject are an index range.
CREATE TABLE manifests (
	repo    text COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE RESTRICT,
	digest  text COLLATE "C" NOT NULL,
	rec     json NOT NULL,
	subject text COLLATE "C",
	PRIMARY KEY (repo, digest)
);
CREATE INDEX manifests_by_digest ON manifests (digest, repo);
CREATE INDEX manifests_by_subject ON manifests (repo, subject, digest) WHERE subject IS NOT NULL;

-- Derived: the digests a manifest references, for garbage collection's
-- question "who uses this digest". Gone with the manifest.
CREATE TABLE manifest_refs (
	repo     text COLLATE "C" NOT NULL,
	manifest text COLLATE "C" NOT NULL,
	ref      text COLLATE "C" NOT NULL,
	PRIMARY KEY (repo, manifest, ref),
	FOREIGN KEY (repo, manifest) REFERENCES manifests (repo, digest) ON DELETE CASCADE
);
CREATE INDEX manifest_refs_by_ref ON manifest_refs (ref, repo, manifest);

-- Derived: the searchable annotations ('a') and config labels ('l') of a
-- manifest. The primary key orders a pair's manifests by repository then
-- digest, the order of search results. Gone with the manifest.
CREATE TABLE search_pairs (
	kind   text COLLATE "C" NOT NULL CHECK (kind IN ('a', 'l')),
	key    text COLLATE "C" NOT NULL,
	value  text COLLATE "C" NOT NULL,
	repo   text COLLATE "C" NOT NULL,
	digest text COLLATE "C" NOT NULL,
	PRIMARY KEY (kind, key, value, repo, digest),
	FOREIGN KEY (repo, digest) REFERENCES manifests (repo, digest) ON DELETE CASCADE
);
CREATE INDEX search_pairs_by_manifest ON search_pairs (repo, digest);

-- A tag may name a digest the repository does not hold (the core keeps
-- that rule, and fsck checks it); the repository must exist.
CREATE TABLE tags (
	repo   text COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE RESTRICT,
	tag    text COLLATE "C" NOT NULL CHECK (tag <> ''),
	digest text COLLATE "C" NOT NULL,
	PRIMARY KEY (repo, tag)
);
CREATE INDEX tags_by_digest ON tags (repo, digest, tag);

-- Tag history outlives tags, manifests and repositories: no reference to
-- them. last_seq numbers the moves of one tag; its row is the lock that
-- serialises the appends of that tag.
CREATE TABLE tag_histories (
	repo     text COLLATE "C" NOT NULL CHECK (repo <> ''),
	tag      text COLLATE "C" NOT NULL CHECK (tag <> ''),
	last_seq bigint NOT NULL CHECK (last_seq > 0),
	PRIMARY KEY (repo, tag)
);
CREATE TABLE tag_moves (
	repo text COLLATE "C" NOT NULL,
	tag  text COLLATE "C" NOT NULL,
	seq  bigint NOT NULL CHECK (seq > 0),
	rec  json NOT NULL,
	PRIMARY KEY (repo, tag, seq),
	FOREIGN KEY (repo, tag) REFERENCES tag_histories (repo, tag) ON DELETE RESTRICT
);

CREATE TABLE uploads (
	id  text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
	rec json NOT NULL
);

-- The secret's hash is a column, not part of the record, and unique: one
-- secret names one robot.
CREATE TABLE robots (
	name text COLLATE "C" PRIMARY KEY CHECK (name <> ''),
	rec  json NOT NULL,
	hash text COLLATE "C" NOT NULL CHECK (hash <> ''),
	CONSTRAINT robots_hash_unique UNIQUE (hash)
);

-- Pull records, like history, outlive what they name.
CREATE TABLE pulls (
	repo       text COLLATE "C" NOT NULL,
	digest     text COLLATE "C" NOT NULL,
	actor_kind text COLLATE "C" NOT NULL CHECK (actor_kind <> ''),
	actor_name text COLLATE "C" NOT NULL,
	rec        json NOT NULL,
	PRIMARY KEY (repo, digest, actor_kind, actor_name)
);

-- The pull-through cache's records: its own, referring to nothing.
CREATE TABLE cached_manifests (
	repo   text COLLATE "C" NOT NULL,
	digest text COLLATE "C" NOT NULL,
	rec    json NOT NULL,
	PRIMARY KEY (repo, digest)
);
CREATE TABLE tag_checks (
	repo text COLLATE "C" NOT NULL,
	tag  text COLLATE "C" NOT NULL,
	rec  json NOT NULL,
	PRIMARY KEY (repo, tag)
);

-- Replication's records: its own, referring to nothing.
CREATE TABLE synced_tags (
	rule text COLLATE "C" NOT NULL CHECK (rule <> ''),
	repo text COLLATE "C" NOT NULL,
	tag  text COLLATE "C" NOT NULL,
	rec  json NOT NULL,
	PRIMARY KEY (rule, repo, tag)
);
CREATE TABLE sync_runs (
	rule text COLLATE "C" PRIMARY KEY CHECK (rule <> ''),
	rec  json NOT NULL
);

-- The outbox of webhook deliveries. Seq comes from one sequence, so it is
-- unique across the outbox and the dead letters; the row of an endpoint
-- and key in outbox_keys is locked by every append of theirs before it
-- takes its number, so that their deliveries are numbered in commit order.
CREATE SEQUENCE delivery_seq AS bigint MINVALUE 1;
CREATE TABLE outbox_keys (
	endpoint text COLLATE "C" NOT NULL CHECK (endpoint <> ''),
	key      text COLLATE "C" NOT NULL,
	appended bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (endpoint, key)
);
CREATE TABLE deliveries (
	endpoint text COLLATE "C" NOT NULL,
	key      text COLLATE "C" NOT NULL,
	seq      bigint NOT NULL CHECK (seq > 0),
	rec      json NOT NULL,
	PRIMARY KEY (endpoint, key, seq),
	FOREIGN KEY (endpoint, key) REFERENCES outbox_keys (endpoint, key) ON DELETE RESTRICT
);
CREATE UNIQUE INDEX deliveries_by_seq ON deliveries (seq);
CREATE TABLE dead_letters (
	seq bigint PRIMARY KEY CHECK (seq > 0),
	rec json NOT NULL
);
