#!/bin/bash
# Self-test for tests/groovy/harness.groovy: runs it on the fixtures and checks exit codes and JSON fields.
# Usage: tests/groovy/selftest.sh   (needs groovy 2.4 + a JDK; python3 for JSON checks)
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
H="$HERE/harness.groovy"
FX="$HERE/fixtures"
: "${JAVA_HOME:=/usr/lib/jvm/java-17-openjdk-amd64}"
export JAVA_HOME
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
printf -- '-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n' > "$TMP/key"
printf 'not a key\n' > "$TMP/not-a-key"
printf 'back.example.com ssh-ed25519 AAAA\n' > "$TMP/known_hosts"
mkdir -p "$TMP/ws"
CREDS=(--cred "back-key=$TMP/key" --cred-user back-key=deploy --cred "known-hosts=$TMP/known_hosts")

pass=0; fail=0
# check NAME EXPECTED_RC PYTHON_ASSERTIONS(about dict d, may be empty) -- harness args...
check() {
    local name="$1" want="$2" py="$3"; shift 4
    local out="$TMP/$name.json" log="$TMP/$name.log"
    rm -f "$out"
    groovy "$H" --quiet --result-file "$out" "$@" >"$log" 2>&1
    local rc=$?
    if [ "$rc" != "$want" ]; then
        echo "FAIL $name: exit $rc, expected $want"; sed 's/^/    /' "$log"; fail=$((fail+1)); return
    fi
    if [ -n "$py" ]; then
        if ! python3 - "$out" "$py" <<'PY' >"$log.py" 2>&1; then
import json, sys
d = json.load(open(sys.argv[1]))
st = {s['name']: s for s in d.get('stages') or []}
exec(sys.argv[2])
PY
            echo "FAIL $name: JSON assertion failed"; sed 's/^/    /' "$log.py"; fail=$((fail+1)); return
        fi
    fi
    echo "ok   $name"; pass=$((pass+1))
}

# --- valid pipeline, dry run (sh recorded, not executed)
check valid-dry 0 "
assert d['result'] == 'SUCCESS', d['result']
assert [s['name'] for s in d['stages']] == ['Build', 'Deploy', 'Pick color', 'Push', 'Never on feature branches']
assert st['Pick color']['parent'] == 'Deploy' and st['Push']['parent'] == 'Deploy'
assert st['Never on feature branches']['status'] == 'skipped'
assert d['run'] is False and len(d['sh']) == 3
assert d['sh'][0] == {'stage': 'Build', 'script': 'echo gradle build', 'label': 'gradle build', 'returnStdout': False, 'returnStatus': False, 'exitCode': 0, 'timeouts': ['pipeline options']}
assert d['sh'][2]['script'].startswith('#!/bin/bash\n')
assert d['credentials'] == ['back-key', 'known-hosts']
assert d['options']['timeout'] == {'time': 15, 'unit': 'MINUTES'}
assert d['options']['disableConcurrentBuilds'] == {'abortPrevious': True}
assert d['tools'] == {'gradle': 'gradle-8'}
assert [p['name'] for p in d['parameters']] == ['ROLLBACK', 'VERSION', 'TARGET']
assert d['params'] == {'ROLLBACK': False, 'VERSION': '1.0.0', 'TARGET': 'auto'}
assert len(d['input']) == 1 and d['input'][0]['ok'] == 'Switch'
assert d['slack'] == [{'channel': '#deploys', 'color': 'good', 'message': 'Deployed shop to green', 'stage': None}], d['slack']
assert d['echo'][0] == 'building shop 1.0.0 into /srv/shop'
" -- --env BRANCH_NAME=main "${CREDS[@]}" "$FX/valid.Jenkinsfile"

# --- same, executed: shebang script runs under bash, key copy is mode 0400, stdout captured
check valid-run 0 "
assert d['result'] == 'SUCCESS', (d['result'], d['errors'])
assert all(s['exitCode'] == 0 for s in d['sh'])
assert d['slack'][0]['message'] == 'Deployed shop to blue', d['slack']
assert 'color file: blue' in d['echo']
" -- --run --workspace "$TMP/ws" --env BRANCH_NAME=main "${CREDS[@]}" "$FX/valid.Jenkinsfile"

# --- not on main and no rollback: Deploy skipped (branch reads BRANCH_NAME only; GIT_BRANCH is ignored)
check valid-feature-branch 0 "
assert d['result'] == 'SUCCESS'
assert st['Deploy']['status'] == 'skipped' and st['Push']['status'] == 'skipped'
assert d['sh'] == [d['sh'][0]] and d['credentials'] == []
" -- --env GIT_BRANCH=origin/main "$FX/valid.Jenkinsfile"

# --- rollback param (boolean parsed) enables Deploy on a feature branch
check valid-rollback-param 0 "
assert d['params']['ROLLBACK'] is True
assert st['Deploy']['status'] == 'success'
" -- --env BRANCH_NAME=feature/x --param ROLLBACK=true "${CREDS[@]}" "$FX/valid.Jenkinsfile"

# --- unknown credentials id: FAILURE like Jenkins
check valid-missing-cred 0 "
assert d['result'] == 'FAILURE'
assert st['Push']['status'] == 'failed' and st['Deploy']['status'] == 'failed'
assert any(\"Could not find credentials entry with ID 'back-key'\" in e['message'] for e in d['errors'])
assert d['slack'][0]['color'] == 'danger'
" -- --env BRANCH_NAME=main "$FX/valid.Jenkinsfile"

# --- input rejected: ABORTED, no success notification
check valid-input-abort 0 "
assert d['result'] == 'ABORTED'
assert st['Push']['status'] == 'aborted' and st['Never on feature branches']['status'] == 'skipped'
assert d['slack'] == []
assert {'scope': 'pipeline', 'condition': 'always'} in d['post']
" -- --env BRANCH_NAME=main --input abort "${CREDS[@]}" "$FX/valid.Jenkinsfile"

# --- simulated timeout/abort at a stage
check valid-abort-at-stage 0 "
assert d['result'] == 'ABORTED'
assert st['Build']['status'] == 'aborted' and st['Deploy']['status'] == 'skipped'
assert d['sh'] == []
" -- --env BRANCH_NAME=main --abort-at-stage Build "${CREDS[@]}" "$FX/valid.Jenkinsfile"

# --- failing sh with --run
check failing-sh-run 0 "
assert d['result'] == 'FAILURE'
assert [s['status'] for s in d['stages']] == ['success', 'failed', 'skipped']
assert [s['exitCode'] for s in d['sh']] == [0, 3]
assert d['echo'] == ['stage Boom failed', 'always'], d['echo']
assert d['slack'][0]['message'] == 'Build FAILURE'
" -- --run --workspace "$TMP/ws" "$FX/failing-sh.Jenkinsfile"

# --- same fixture dry: nothing executed, so SUCCESS; --fail-sh makes it fail without running anything
check failing-sh-dry 0 "
assert d['result'] == 'SUCCESS' and d['echo'] == ['never printed', 'never reached', 'always', 'unexpected success'], d['echo']
" -- "$FX/failing-sh.Jenkinsfile"
check failing-sh-dry-failsh 0 "
assert d['result'] == 'FAILURE' and st['Boom']['status'] == 'failed'
" -- --fail-sh 'exit 3' "$FX/failing-sh.Jenkinsfile"

# --- shebang only when #! is the very first character
check shebang 0 "
assert [s['exitCode'] for s in d['sh']] == [0, 1], d['sh']
" -- --run --workspace "$TMP/ws" "$FX/shebang.Jenkinsfile"

check nested-fail 0 "
assert d['result'] == 'FAILURE'
assert [(s['name'], s['status']) for s in d['stages']] == [('Deploy', 'failed'), ('Green', 'failed'), ('Switch', 'skipped'), ('Notify', 'skipped')]
assert d['echo'] == ['deploy unsuccessful', 'pipeline failure', 'pipeline cleanup'], d['echo']
" -- "$FX/nested-fail.Jenkinsfile"

check agent-none-sh 0 "
assert d['result'] == 'FAILURE' and st['No agent']['status'] == 'failed'
assert 'hudson.FilePath' in d['errors'][0]['message']
assert d['slack'][0]['message'] == 'done'
" -- "$FX/agent-none-sh.Jenkinsfile"

check string-false 0 "
assert st['Runs anyway']['status'] == 'success' and st['Skipped']['status'] == 'skipped'
assert st['Main only']['status'] == 'skipped'
" -- "$FX/string-false.Jenkinsfile"
check string-false-main 0 "
assert st['Main only']['status'] == 'success'
" -- --env BRANCH_NAME=main "$FX/string-false.Jenkinsfile"

# --- post conditions in Jenkins' order (by extension ordinal), whatever the file's order: a
# `success` that throws makes `failure` run after it.
check post-order 0 "
assert d['result'] == 'SUCCESS', d['result']
assert [p['condition'] for p in d['post']] == ['always', 'success'], d['post']
" -- "$FX/post-order.Jenkinsfile"
check post-order-success-throws 0 "
assert d['result'] == 'FAILURE', d['result']
assert [p['condition'] for p in d['post']] == ['always', 'success', 'failure'], d['post']
assert 'failure ran' in d['echo'], d['echo']
" -- --fail-step slackSend "$FX/post-order.Jenkinsfile"

# --- timeouts (TimeoutStepExecution): a pipeline-level timeout stops the running sh and its whole
# process tree, and wraps post, whose undo has the grace (--timeout-grace 1 here, 60 s in Jenkins)
# and is killed after it; a stage-level timeout leaves post outside; an input nobody answers ends
# with the timeout around it.
for w in tp1 tp60 ts; do mkdir -p "$TMP/$w"; done
check timeout-post-grace-over 0 "
import os
ws = '$TMP/tp1'
assert d['result'] == 'ABORTED', d['result']
assert not os.path.exists(ws + '/deploy-done'), 'the timed-out sh ran to its end'
assert not os.path.exists(ws + '/undo-done'), 'the undo outlived the grace'
pid = open(ws + '/orphan.pid').read().strip()
alive = os.path.exists('/proc/' + pid) and 'State:\tZ' not in open('/proc/' + pid + '/status').read()
assert not alive, 'a child of the stopped sh survived'
assert any('grace period' in e['message'] for e in d['errors']), d['errors']
assert d['sh'][1]['timeouts'] == ['pipeline options'], d['sh'][1]
" -- --run --workspace "$TMP/tp1" --timeout-grace 1 "$FX/timeout-post.Jenkinsfile"
check timeout-post-within-grace 0 "
import os
assert d['result'] == 'ABORTED', d['result']
assert os.path.exists('$TMP/tp60/undo-done'), 'the undo did not finish within the 60 s grace'
" -- --run --workspace "$TMP/tp60" "$FX/timeout-post.Jenkinsfile"
check timeout-stage-post-outside 0 "
import os
assert d['result'] == 'ABORTED', d['result']
assert os.path.exists('$TMP/ts/undo-done'), 'the undo was cut off'
assert d['sh'][0]['timeouts'] == ['stage Deploy'], d['sh'][0]
assert d['sh'][1]['timeouts'] == [], d['sh'][1]
" -- --run --workspace "$TMP/ts" --timeout-grace 1 "$FX/timeout-stage.Jenkinsfile"
check gate-timeout 0 "
assert d['result'] == 'ABORTED', d['result']
assert 'gate aborted' in d['echo'] and 'promoted' not in d['echo'], d['echo']
assert any('Timeout has been exceeded' in e['message'] for e in d['errors']), d['errors']
" -- --input timeout "$FX/gate-timeout.Jenkinsfile"
check gate-proceed 0 "
assert d['result'] == 'SUCCESS' and 'promoted' in d['echo'], d
" -- "$FX/gate-timeout.Jenkinsfile"

# --- a sh step's environment: the agent's PATH and HOME, what Jenkins sets (BUILD_TAG from the job
# and the build number, WORKSPACE ...), the pipeline's environment; nothing else of the caller's.
mkdir -p "$TMP/env"
SSH_AUTH_SOCK=/tmp/developer-agent BG_SELFTEST_LEAK=leaked check sh-env 0 "
e = dict(l.split('=', 1) for l in open('$TMP/env/env.txt').read().splitlines() if '=' in l)
assert e['BUILD_TAG'] == 'jenkins-shop-deploy-7', e
assert e['BUILD_NUMBER'] == '7' and e['JOB_NAME'] == 'shop-deploy', e
assert e['WORKSPACE'] == '$TMP/env', e
assert e['FROM_PIPELINE'] == 'yes' and 'PATH' in e, e
assert 'SSH_AUTH_SOCK' not in e and 'BG_SELFTEST_LEAK' not in e, e
assert 'BRANCH_NAME' not in e and 'GIT_BRANCH' not in e, e
" -- --run --workspace "$TMP/env" --env JOB_NAME=shop-deploy --env BUILD_NUMBER=7 "$FX/env.Jenkinsfile"

# --- credential kinds: a binding finds only its own kind (sshUserPrivateKey a private key, file a
# secret file, string a secret text)
check ssh-cred-not-a-key 0 "
assert d['result'] == 'FAILURE', d['result']
assert any(\"is of type 'Secret file' where 'SSH Username with private key' was expected\" in e['message'] for e in d['errors']), d['errors']
" -- --env BRANCH_NAME=main --cred "back-key=$TMP/not-a-key" --cred "known-hosts=$TMP/known_hosts" "$FX/valid.Jenkinsfile"
printf 'token-value\n' > "$TMP/token"
check cred-string-of-a-file 0 "
assert d['result'] == 'FAILURE', d['result']
assert any(\"Credentials 'token' is of type 'Secret file' where 'Secret text' was expected\" in e['message'] for e in d['errors']), d['errors']
" -- --run --workspace "$TMP/ws" --cred "token=$TMP/token" --cred "known-hosts=$TMP/known_hosts" "$FX/cred-kinds.Jenkinsfile"
check cred-file-of-a-key 0 "
assert d['result'] == 'FAILURE', d['result']
assert any(\"Credentials 'known-hosts' is of type 'SSH Username with private key' where 'Secret file' was expected\" in e['message'] for e in d['errors']), d['errors']
" -- --run --workspace "$TMP/ws" --cred "token=$TMP/token" --cred-type token=string --cred "known-hosts=$TMP/key" "$FX/cred-kinds.Jenkinsfile"
check cred-kinds-right 0 "
assert d['result'] == 'SUCCESS', (d['result'], d['errors'])
" -- --run --workspace "$TMP/ws" --cred "token=$TMP/token" --cred-type token=string --cred "known-hosts=$TMP/known_hosts" "$FX/cred-kinds.Jenkinsfile"

# --- agents (ModelInterpreter's inDeclarativeAgent, the node step) and stash/unstash
# (workflow-basic-steps' StashManager): with agent none each stage's agent is a workspace of its
# own, holding the checkout and nothing another stage wrote; only a stash carries files across; an
# input outside any agent holds no executor, one inside the top-level agent does; a node step
# checks nothing out.
mkdir -p "$TMP/ag" "$TMP/ag-out"
echo yes > "$TMP/ag/checked-out.txt"
check agents-stash 0 "
import os
out = '$TMP/ag-out'
assert d['result'] == 'SUCCESS', (d['result'], d['errors'])
assert [a['kind'] for a in d['agents']] == ['stage', 'stage', 'node'], d['agents']
assert len({a['workspace'] for a in d['agents']}) == 3, d['agents']
assert '$TMP/ag' not in [a['workspace'] for a in d['agents']], d['agents']
assert open(out + '/seen-before-unstash').read() == 'fresh\\n', 'state reached another agent without a stash'
assert open(out + '/seen-after-unstash').read() == 'before\\nclean\\n', open(out + '/seen-after-unstash').read()
assert open(out + '/post-node').read() == 'empty\\nbefore\\n', open(out + '/post-node').read()
assert d['input'][0]['executor'] is False, d['input']
assert [(s['op'], s['name']) for s in d['stashes']] == [('stash', 'state'), ('unstash', 'state'), ('unstash', 'state')], d['stashes']
assert d['stashes'][0]['files'] == 1, d['stashes']
" -- --run --workspace "$TMP/ag" --env "OUT=$TMP/ag-out" "$FX/agents-stash.Jenkinsfile"
check input-holds-executor 0 "
assert d['input'][0]['executor'] is True, d['input']
" -- "$FX/gate-timeout.Jenkinsfile"
check stage-input-before-agent 0 "
assert d['result'] == 'SUCCESS', (d['result'], d['errors'])
assert d['input'][0]['executor'] is False, d['input']
assert [s['timeouts'] for s in d['sh']] == [['stage Promote'], ['stage Promote']], d['sh']
assert len(d['agents']) == 1, d['agents']
" -- --run --workspace "$TMP/ws" "$FX/stage-input-agent.Jenkinsfile"
check stash-empty 0 "
assert d['result'] == 'FAILURE', d['result']
assert any('No files included in stash \u2018nothing\u2019' in e['message'] for e in d['errors']), d['errors']
" -- --run --workspace "$TMP/ws" "$FX/stash-errors.Jenkinsfile"
check stash-allow-empty 0 "
assert d['result'] == 'SUCCESS', (d['result'], d['errors'])
" -- --run --workspace "$TMP/ws" --param CASE=allow-empty "$FX/stash-errors.Jenkinsfile"
check unstash-missing 0 "
assert d['result'] == 'FAILURE', d['result']
assert any('No such saved stash \u2018never-stashed\u2019' in e['message'] for e in d['errors']), d['errors']
" -- --run --workspace "$TMP/ws" --param CASE=missing "$FX/stash-errors.Jenkinsfile"

# --- structural and compile errors must fail
for f in step-in-stage missing-agent bad-post when-outside-stage two-agents step-in-pipeline stage-both; do
    check "$f" 4 "assert d['result'] is None and d['error']['kind'] == 'structure'" -- "$FX/$f.Jenkinsfile"
done
check compile-error 3 "assert d['error']['kind'] == 'compile' and 'unexpected char' in d['error']['message']" -- "$FX/compile-error.Jenkinsfile"

# --- usage errors
check usage-no-file 2 "" -- --run
check usage-bad-option 2 "" -- --bogus "$FX/valid.Jenkinsfile"
check usage-bad-env 2 "" -- --env NOVALUE "$FX/valid.Jenkinsfile"

echo "selftest: $pass passed, $fail failed"
[ "$fail" = 0 ]
