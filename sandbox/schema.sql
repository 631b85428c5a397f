-- Test schema for shardgate: a small social app sharded by user id.
-- users, posts and follows are sharded (users by id, the others by user_id);
-- countries is a reference table copied in full to every shard.

CREATE TABLE IF NOT EXISTS users (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    country    text,
    created_at timestamptz DEFAULT now()
);

CREATE TABLE IF NOT EXISTS posts (
    user_id    bigint,
    id         bigint,
    body       text,
    likes      int DEFAULT 0,
    created_at timestamptz DEFAULT now(),
    PRIMARY KEY (user_id, id)
);

CREATE TABLE IF NOT EXISTS follows (
    user_id     bigint,
    followee_id bigint,
    created_at  timestamptz DEFAULT now(),
    PRIMARY KEY (user_id, followee_id)
);

CREATE TABLE IF NOT EXISTS countries (
    code text PRIMARY KEY,
    name text
);
