#!/usr/bin/env bash
# Run a single-node Apache Kafka broker (KRaft, combined broker+controller) on
# loopback, from the jars gathered by fetch.sh. For developers, and used by the
# test fixture (tests/servers/kafka.py) so both start the broker the same way.
#
#   scripts/kafka/run-broker.sh                       # 127.0.0.1:9092, data in var/kafka/dev
#   scripts/kafka/run-broker.sh --port 19092 --controller-port 19093 --data-dir /tmp/k --fresh
#
# Options:
#   --port N              client (PLAINTEXT) port, default 9092
#   --controller-port N   KRaft controller port, default port+1
#   --data-dir DIR        where config, log.dirs and broker.log live
#                         (default <repo>/var/kafka/dev)
#   --fresh               delete DIR's log data and format it anew (a new cluster id)
#   --heap SIZE           JVM heap (-Xms/-Xmx), default 512m
#   --sasl-ssl-port N     also a SASL_SSL listener on N (TLS, then SASL PLAIN), with:
#   --tls-keystore FILE   its certificate chain and unencrypted PKCS#8 key, PEM, in one file
#   --plain-users FILE    the PLAIN users it accepts, one "name password" a line
#   --scram-users FILE    SCRAM-SHA-512 users too, one "name password" a line (written into the
#                         cluster's metadata when the log directory is formatted: with --fresh)
#   --ssl-port N          also an SSL listener on N requiring a client certificate (mutual TLS;
#                         the principal is User:<the certificate's subject>, e.g. User:CN=s117-hub),
#                         with --tls-keystore and:
#   --tls-truststore FILE the CA(s) client certificates must chain to, PEM
#   --oauth-port N        also a SASL_SSL listener named OAUTH on N taking SASL/OAUTHBEARER only, with
#                         --tls-keystore; Kafka's unsecured validator (for tests: an unsigned JWT,
#                         "alg":"none", its `sub` the principal, `exp` required), sessions ending when
#                         the token does (connections.max.reauth.ms: a client that does not
#                         re-authenticate is disconnected then, and connects again with a new token)
#   --oauth-scope S       the scope every OAUTH listener token must carry (its `scope` claim)
#   --super-users LIST    turn on KRaft's StandardAuthorizer: these principals (e.g. "User:hub")
#                         may do anything, everyone else nothing (no ACLs are made); the
#                         PLAINTEXT and controller listeners' principal (User:ANONYMOUS) is
#                         always a super user
# The broker runs in the foreground (exec: the script's pid becomes the JVM's),
# logging to stdout. Ctrl-C / SIGTERM stops it cleanly. Ready when it logs
# "Kafka Server started" and the port accepts connections.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port=9092
cport=""
data="$repo/var/kafka/dev"
fresh=0
heap="${S117_KAFKA_HEAP:-512m}"
sasl_port=""
keystore=""
plain_users=""
scram_users=""
ssl_port=""
truststore=""
oauth_port=""
oauth_scope=""
super_users=""

while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --controller-port) cport="$2"; shift 2 ;;
    --data-dir) data="$2"; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --heap) heap="$2"; shift 2 ;;
    --sasl-ssl-port) sasl_port="$2"; shift 2 ;;
    --tls-keystore) keystore="$2"; shift 2 ;;
    --plain-users) plain_users="$2"; shift 2 ;;
    --super-users) super_users="$2"; shift 2 ;;
    --scram-users) scram_users="$2"; shift 2 ;;
    --ssl-port) ssl_port="$2"; shift 2 ;;
    --tls-truststore) truststore="$2"; shift 2 ;;
    --oauth-port) oauth_port="$2"; shift 2 ;;
    --oauth-scope) oauth_scope="$2"; shift 2 ;;
    -h|--help) sed -n '2,37p' "$0"; exit 0 ;;
    *) echo "run-broker.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
cport="${cport:-$((port + 1))}"
if [[ -n "$sasl_port" && ( -z "$keystore" || -z "$plain_users" ) ]]; then
  echo "run-broker.sh: --sasl-ssl-port needs --tls-keystore and --plain-users" >&2; exit 2
fi
if [[ -n "$oauth_port" && -z "$keystore" ]]; then
  echo "run-broker.sh: --oauth-port needs --tls-keystore" >&2; exit 2
fi
if [[ -n "$ssl_port" && ( -z "$keystore" || -z "$truststore" ) ]]; then
  echo "run-broker.sh: --ssl-port needs --tls-keystore and --tls-truststore" >&2; exit 2
fi

libs="$("$here/fetch.sh")"
mkdir -p "$data"
data="$(cd "$data" && pwd)"
logs="$data/kraft-logs"
[[ "$fresh" == 1 ]] && rm -rf "$logs"

cat > "$data/server.properties" <<PROPS
# Written by scripts/kafka/run-broker.sh: single node, combined mode, loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$logs
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# One offsets/transaction partition instead of 50: the first group commit on a
# fresh node then waits for one partition to be created, not fifty.
offsets.topic.num.partitions=1
transaction.state.log.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
PROPS

listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
[[ -n "$sasl_port" ]] && listeners="$listeners,SASL_SSL://127.0.0.1:$sasl_port" && protocols="$protocols,SASL_SSL:SASL_SSL"
[[ -n "$ssl_port" ]] && listeners="$listeners,SSL://127.0.0.1:$ssl_port" && protocols="$protocols,SSL:SSL"
[[ -n "$oauth_port" ]] && listeners="$listeners,OAUTH://127.0.0.1:$oauth_port" && protocols="$protocols,OAUTH:SASL_SSL"
if [[ -n "$sasl_port$ssl_port$oauth_port" ]]; then
  # Later keys win in a Java properties file: the listeners are restated with the secured ones.
  cat >> "$data/server.properties" <<PROPS
listeners=$listeners
advertised.listeners=$listeners
listener.security.protocol.map=$protocols
PROPS
fi
if [[ -n "$sasl_port" ]]; then
  users=""
  while read -r name secret; do
    [[ -n "$name" ]] && users="$users user_$name=\"$secret\""
  done < "$plain_users"
  mechanisms="PLAIN"
  [[ -n "$scram_users" ]] && mechanisms="PLAIN,SCRAM-SHA-512"
  cat >> "$data/server.properties" <<PROPS
sasl.enabled.mechanisms=$mechanisms
listener.name.sasl_ssl.sasl.enabled.mechanisms=$mechanisms
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$users;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$keystore
PROPS
fi
if [[ -n "$ssl_port" ]]; then
  cat >> "$data/server.properties" <<PROPS
listener.name.ssl.ssl.client.auth=required
listener.name.ssl.ssl.keystore.type=PEM
listener.name.ssl.ssl.keystore.location=$keystore
listener.name.ssl.ssl.truststore.type=PEM
listener.name.ssl.ssl.truststore.location=$truststore
PROPS
fi
if [[ -n "$oauth_port" ]]; then
  # No server callback handler named: OAUTHBEARER's default, the unsecured validator. The broker's own
  # login (unused: the brokers talk PLAINTEXT) still needs a principal claim.
  required=""
  [[ -n "$oauth_scope" ]] && required=" unsecuredValidatorRequiredScope=\"$oauth_scope\""
  cat >> "$data/server.properties" <<PROPS
listener.name.oauth.sasl.enabled.mechanisms=OAUTHBEARER
listener.name.oauth.oauthbearer.sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker"$required;
listener.name.oauth.oauthbearer.connections.max.reauth.ms=3600000
listener.name.oauth.ssl.keystore.type=PEM
listener.name.oauth.ssl.keystore.location=$keystore
PROPS
fi
if [[ -n "$super_users" ]]; then
  cat >> "$data/server.properties" <<PROPS
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;$super_users
allow.everyone.if.no.acl.found=false
PROPS
fi

cat > "$data/log4j.properties" <<'PROPS'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log=WARN
PROPS

jvm=(java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
     "-Dlog4j.configuration=file:$data/log4j.properties" -cp "$libs/*")

if [[ ! -f "$logs/meta.properties" ]]; then
  cluster_id="$("${jvm[@]}" kafka.tools.StorageTool random-uuid | tail -n1)"
  scram=()
  if [[ -n "$scram_users" ]]; then
    while read -r name secret; do
      [[ -n "$name" ]] && scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$secret]")
    done < "$scram_users"
  fi
  "${jvm[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$data/server.properties" --standalone "${scram[@]}"
fi

exec "${jvm[@]}" kafka.Kafka "$data/server.properties"
