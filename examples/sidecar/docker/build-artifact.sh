#!/bin/sh
# Assembles the sidecar's runtime tree: what the Docker image's runtime stage copies, and what
# examples/sidecar/test/docker-artifact.test.ts builds and starts without Docker.
#
#   build-artifact.sh <src-root> <out-dir>
#
# <src-root> is a checkout of the repository whose workspaces are already built (`npm ci` then
# `npm run build`: the dist/ folders of core, the Fastify plugin and the sidecar). <out-dir>
# must be empty or missing. It gets the root manifest and lockfile, the package.json and dist/
# of the three workspace packages the sidecar runs on, and a production-only node_modules:
#
#   <out-dir>/package.json, package-lock.json
#   <out-dir>/packages/core/{package.json,dist}
#   <out-dir>/packages/fastify-plugin/{package.json,dist}
#   <out-dir>/examples/sidecar/{package.json,dist,bin,ui}
#   <out-dir>/examples/sidecar/data -> ../../data   (the demo database, in <out-dir>/data)
#   <out-dir>/node_modules            (@spark-export/* are links to the folders above)
#
# Start it with `node examples/sidecar/dist/server.js` from <out-dir>.
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 <src-root> <out-dir>" >&2
  exit 2
fi
src=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
if [ -n "$(ls -A "$out")" ]; then
  echo "build-artifact.sh: $out is not empty" >&2
  exit 2
fi

# The workspaces the sidecar needs at run time (its dependencies @spark-export/core and
# @spark-export/fastify). The other workspaces are left out: npm ci --workspace ignores them.
for pkg in packages/core packages/fastify-plugin packages/bullmq packages/s3 examples/sidecar; do
  if [ ! -f "$src/$pkg/dist/index.js" ] && [ ! -f "$src/$pkg/dist/server.js" ]; then
    echo "build-artifact.sh: $src/$pkg/dist is missing: run npm ci && npm run build in $src first" >&2
    exit 1
  fi
  mkdir -p "$out/$pkg"
  cp "$src/$pkg/package.json" "$out/$pkg/package.json"
  cp -R "$src/$pkg/dist" "$out/$pkg/dist"
done
cp "$src/package.json" "$src/package-lock.json" "$out/"
# The bin (linked into node_modules/.bin by npm ci below), and the built-in demo's data
# directory: the sidecar keeps it next to its package, which the image's user cannot write, so
# it is a link to /app/data, the directory the image makes writable.
cp -R "$src/examples/sidecar/bin" "$out/examples/sidecar/bin"
# The exports page's static files (/export/ui), read next to dist/ at start-up.
cp -R "$src/examples/sidecar/ui" "$out/examples/sidecar/ui"
mkdir "$out/data"
ln -s ../../data "$out/examples/sidecar/data"

# Production dependencies of the sidecar only, exactly as locked. better-sqlite3 runs its
# install script (a prebuilt binary when one can be downloaded, else a build from source with
# python3, make and g++); the root package.json's allowScripts approves it for npm 11.
# Optional ones are left out too: vitest, an optional peer of core (for its /testing suites)
# and a dev dependency of the repository, is locked as "devOptional", which --omit=dev keeps.
cd "$out"
npm ci --omit=dev --omit=optional --workspace @spark-export/sidecar --include-workspace-root=false \
  --no-audit --no-fund --loglevel=error

# Fail here, not at the first request, when the native module or a workspace link is broken.
cd "$out/examples/sidecar"
node -e "
  const Database = require('better-sqlite3');
  new Database(':memory:').prepare('select 1').get();
  Promise.all([import('@spark-export/core'), import('@spark-export/fastify'), import('@spark-export/bullmq'), import('@spark-export/s3')]).catch((error) => {
    console.error(error);
    process.exit(1);
  });
"
echo "build-artifact.sh: runtime tree ready in $out"
