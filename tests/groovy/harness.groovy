// Groovy 2.4 harness that evaluates a rendered declarative Jenkinsfile roughly the way Jenkins'
// pipeline-model-definition plugin would, without Jenkins.  See the usage text below (--help).
//
// Exit codes: 0 evaluation ran (build result is in the JSON), 2 usage error, 3 compile error,
// 4 structural (declarative validation) error.

import groovy.json.JsonOutput
import org.codehaus.groovy.control.CompilerConfiguration
import org.codehaus.groovy.runtime.typehandling.DefaultTypeTransformation
import java.nio.file.Files
import java.nio.file.attribute.PosixFilePermission

class StructuralError extends RuntimeException { StructuralError(String m) { super(m) } }
class StepFailure extends RuntimeException { StepFailure(String m) { super(m) } }
class AbortError extends RuntimeException { AbortError(String m) { super(m) } }
class UsageError extends RuntimeException { UsageError(String m) { super(m) } }

class Marker {
    String name
    Marker(String n) { name = n }
    String toString() { name }
}

/** Base class of the compiled Jenkinsfile: every unresolved method call goes to the interpreter. */
abstract class JenkinsfileScript extends Script {
    def methodMissing(String name, args) { Interp.current.dispatch(name, args as Object[]) }
    void println(Object o) { Interp.current.dispatch('echo', [o == null ? 'null' : o.toString()] as Object[]) }
    void println() { Interp.current.dispatch('echo', [''] as Object[]) }
    void print(Object o) { Interp.current.dispatch('echo', [o == null ? 'null' : o.toString()] as Object[]) }
    def sleep(long t) { Interp.current.dispatch('sleep', [t] as Object[]) }
}

class PipelineBinding extends Binding {
    Interp interp
    Object getVariable(String name) {
        def vars = getVariables()
        if (vars.containsKey(name)) return vars.get(name)
        switch (name) {
            case 'env': return interp.envObj
            case 'params': return interp.params
            case 'currentBuild': return interp.currentBuild
            case 'scm': return new Marker('scm')
            case 'any': return new Marker('any')
            case 'none': return new Marker('none')
        }
        def flat = interp.envFlat()
        if (flat.containsKey(name)) return flat.get(name)
        throw new MissingPropertyException(name, Binding)
    }
    void setVariable(String name, Object value) {
        if (interp.ctx() == 'environment' && interp.envAssignTarget != null) {
            interp.envAssignTarget.put(name, value == null ? null : value.toString())
            if (interp.pendingCredUser != null) {
                interp.envAssignTarget.put(name + '_USR', interp.pendingCredUser.user)
                interp.envAssignTarget.put(name + '_PSW', interp.pendingCredUser.pass)
                interp.pendingCredUser = null
            }
        } else {
            super.setVariable(name, value)
        }
    }
}

class EnvObj extends GroovyObjectSupport {
    Interp interp
    Object getProperty(String n) { interp.envFlat().get(n) }
    void setProperty(String n, Object v) { interp.envSetBase(n, v) }
    Object getAt(String n) { interp.envFlat().get(n) }
    void putAt(String n, Object v) { interp.envSetBase(n, v) }
    Map getEnvironment() { new LinkedHashMap(interp.envFlat()) }
    String toString() { 'env' }
}

class CurrentBuild extends GroovyObjectSupport {
    Interp interp
    Object getProperty(String n) {
        switch (n) {
            case 'result': return (interp.explicitResult == null && interp.buildResult == 'SUCCESS') ? null : interp.buildResult
            case 'currentResult': return interp.buildResult
            case 'durationString': return "${((System.currentTimeMillis() - interp.startMillis) / 1000) as long} sec and counting".toString()
            case 'duration': return System.currentTimeMillis() - interp.startMillis
            case 'displayName': return interp.displayName ?: "#${interp.envFlat().get('BUILD_NUMBER') ?: '1'}".toString()
            case 'fullDisplayName': return "${interp.envFlat().get('JOB_NAME') ?: 'job'} ${getProperty('displayName')}".toString()
            case 'description': return interp.description
            case 'number': return (interp.envFlat().get('BUILD_NUMBER') ?: '1') as int
            case 'id': return interp.envFlat().get('BUILD_NUMBER') ?: '1'
            case 'absoluteUrl': return interp.envFlat().get('BUILD_URL')
            case 'projectName': return interp.envFlat().get('JOB_NAME')
            case 'previousBuild': return interp.previousResult == null ? null : [result: interp.previousResult, currentResult: interp.previousResult]
            case 'changeSets': return []
            case 'buildCauses': return []
        }
        throw new MissingPropertyException(n, CurrentBuild)
    }
    void setProperty(String n, Object v) {
        switch (n) {
            case 'result': interp.setResult(v?.toString()); interp.explicitResult = interp.buildResult; return
            case 'displayName': interp.displayName = v?.toString(); return
            case 'description': interp.description = v?.toString(); return
        }
        throw new ReadOnlyPropertyException(n, CurrentBuild)
    }
    String toString() { 'currentBuild' }
}

class Cond {
    String type
    Object arg
    Map named = [:]
    Closure expr
    List<Cond> children = []
}

class StageModel {
    String name
    StageModel parent
    Map seen = [:]
    Map agent
    Closure envClosure
    Map tools = [:]
    Map options = [:]
    List<Cond> when
    Map whenFlags = [:]
    Map input
    Closure steps
    List<StageModel> stages
    List<StageModel> parallel
    Map post = [:]
    boolean failFast = false
}

class PipelineModel {
    Map seen = [:]
    Map agent
    Closure envClosure
    Map tools = [:]
    Map options = [:]
    List parameters = []
    List triggers = []
    List<StageModel> stages
    Map post = [:]
}

class Frame {
    String kind
    Object data
    Frame(String k, Object d) { kind = k; data = d }
}

class StageFrame {
    StageModel model
    Map entry
    String result = 'SUCCESS'
}

class Interp {
    static Interp current

    // Post conditions run in the order Jenkins runs them, not the order the Jenkinsfile writes them:
    // pipeline-model-definition's BuildCondition extensions (org.jenkinsci.plugins.pipeline.
    // modeldefinition.model.conditions: Always, Changed, Fixed, Regression, Aborted, Success,
    // Unsuccessful, Unstable, Failure, NotBuilt, Cleanup), which the post section walks in the
    // order of their @Extension ordinals, each run when its condition holds for the result at
    // that moment (../shared/facts/jenkins-groovy.md, "Runtime semantics"). So a `success` block
    // that throws makes `failure` run in the same build.
    static final List POST_CONDITIONS = ['always', 'changed', 'fixed', 'regression', 'aborted', 'success',
                                         'unsuccessful', 'unstable', 'failure', 'notBuilt', 'cleanup']
    static final List RESULT_ORDER = ['SUCCESS', 'UNSTABLE', 'FAILURE', 'NOT_BUILT', 'ABORTED']
    static final List PIPELINE_SECTIONS = ['agent', 'tools', 'options', 'parameters', 'environment', 'stages', 'post',
                                           'triggers', 'libraries']
    static final List STAGE_SECTIONS = ['agent', 'environment', 'tools', 'options', 'when', 'input', 'steps', 'stages',
                                        'parallel', 'matrix', 'post', 'failFast']
    static final List OPTIONS = ['buildDiscarder', 'checkoutToSubdirectory', 'disableConcurrentBuilds',
                                 'disableRestartFromStage', 'disableResume', 'durabilityHint', 'newContainerPerStage',
                                 'overrideIndexTriggers', 'parallelsAlwaysFailFast', 'preserveStashes', 'quietPeriod',
                                 'retry', 'skipDefaultCheckout', 'skipStagesAfterUnstable', 'timeout', 'timestamps',
                                 'ansiColor', 'lock', 'copyArtifactPermission', 'rateLimitBuilds', 'githubProjectProperty']
    static final List PARAM_TYPES = ['booleanParam', 'string', 'choice', 'text', 'password', 'credentials', 'run', 'file']
    static final List WHEN_CONDS = ['branch', 'expression', 'environment', 'equals', 'not', 'anyOf', 'allOf',
                                    'buildingTag', 'tag', 'changeRequest', 'changeset', 'changelog', 'triggeredBy',
                                    'isRestartedRun']
    static final List WHEN_FLAGS = ['beforeAgent', 'beforeInput', 'beforeOptions']
    // descriptor-like helpers usable as arguments inside steps (credential bindings, parameter definitions, ...)
    static final List STEP_CONTEXTS = ['steps', 'script', 'postCond', 'block', 'environment', 'top', 'expression']
    // steps that need a workspace (a node): fail like Jenkins "Required context class hudson.FilePath is missing"
    static final List NODE_STEPS = ['sh', 'bat', 'writeFile', 'readFile', 'fileExists', 'dir', 'checkout', 'git',
                                    'deleteDir', 'cleanWs', 'archiveArtifacts', 'junit', 'stash', 'unstash', 'pwd']
    // recorded no-op steps (dry or run)
    static final List NOOP_STEPS = ['checkout', 'git', 'junit', 'archiveArtifacts', 'deleteDir',
                                    'cleanWs', 'milestone', 'build', 'mail', 'emailext', 'properties', 'sleep',
                                    'libraryResource', 'publishHTML', 'recordIssues', 'addBadge', 'cleanupWs']
    static final List KNOWN_STEPS = ['sh', 'echo', 'error', 'input', 'timeout', 'slackSend', 'writeFile', 'readFile',
                                     'fileExists', 'dir', 'withCredentials', 'script', 'withEnv', 'retry', 'catchError',
                                     'warnError', 'unstable', 'sshagent', 'lock', 'node', 'parallel', 'isUnix', 'pwd',
                                     'tool', 'timestamps', 'ansiColor', 'waitUntil', 'stage', 'stash', 'unstash'] + NOOP_STEPS

    // ---- configuration
    boolean runMode = false
    Map<String, String> initialEnv = [:]
    Map<String, String> creds = [:]
    Map<String, String> credUsers = [:]
    Map<String, String> credPass = [:]
    Map<String, String> credTypes = [:]
    boolean dummyCreds = false
    Map<String, String> cliParams = [:]
    boolean firstBuild = false
    File workspace = new File('.').canonicalFile
    String abortAtStage
    String inputAction = 'proceed'
    long inputWaitMs = 0L
    String previousResult
    List<List> mockSh = []
    List<String> failSh = []
    List<String> failSteps = []
    boolean quiet = false

    // ---- state
    PipelineBinding binding
    EnvObj envObj
    CurrentBuild currentBuild
    Map params = [:]
    List<Frame> stack = []
    Map<String, String> envBase = [:]
    List<Map<String, String>> envLayers = []
    Map envAssignTarget
    String buildResult = 'SUCCESS'
    String explicitResult
    String displayName
    String description
    long startMillis = System.currentTimeMillis()
    boolean halted = false
    boolean nodeAvailable = false
    boolean pipelineSeen = false
    List<StageFrame> stageStack = []
    List<String> dirStack = []
    Set<String> stageNames = new HashSet<String>()
    Map<String, String> virtualFiles = [:]
    File tmpDir

    // ---- records
    List stagesOut = []
    List shOut = []
    List slackOut = []
    List echoOut = []
    List credentialsOut = []
    List credentialBindingsOut = []
    List inputOut = []
    List postOut = []
    List stepsOut = []
    List errorsOut = []
    List filesOut = []
    Map agentOut
    Map optionsOut = [:]
    List parametersOut = []
    Map toolsOut = [:]
    List triggersOut = []

    // ================================================================ helpers
    String ctx() { stack ? stack[-1].kind : 'top' }
    Frame frame() { stack ? stack[-1] : null }

    def withFrame(String kind, Object data, Closure c) {
        stack << new Frame(kind, data)
        try { return c.call() } finally { stack.remove(stack.size() - 1) }
    }

    void log(String s) { if (!quiet) System.err.println("[harness] " + s) }

    static List splitArgs(Object[] args) {
        Map named = [:]
        List pos = []
        Closure body = null
        int n = args == null ? 0 : args.length
        for (int i = 0; i < n; i++) {
            def a = args[i]
            if (i == 0 && a instanceof Map) named = (Map) a
            else if (i == n - 1 && a instanceof Closure) body = (Closure) a
            else pos << a
        }
        [named, pos, body]
    }

    static Object plain(Object v) {
        if (v == null || v instanceof Boolean || v instanceof Number) return v
        if (v instanceof CharSequence) return v.toString()
        if (v instanceof Map) {
            def m = [:]
            v.each { k, x -> m[k.toString()] = plain(x) }
            return m
        }
        if (v instanceof Collection || v instanceof Object[]) return v.collect { plain(it) }
        if (v instanceof Closure) return '<closure>'
        return v.toString()
    }

    Map<String, String> envFlat() {
        Map<String, String> m = new LinkedHashMap<String, String>(envBase)
        envLayers.each { layer -> layer.each { k, v -> if (v == null) m.remove(k) else m.put(k, v) } }
        m
    }

    void envSetBase(String n, Object v) {
        if (v == null) envBase.remove(n) else envBase.put(n, v.toString())
    }

    def withEnvLayer(Map<String, String> layer, Closure c) {
        envLayers << layer
        try { return c.call() } finally { envLayers.remove(envLayers.size() - 1) }
    }

    static int rank(String r) { int i = RESULT_ORDER.indexOf(r); i < 0 ? 0 : i }
    static String worst(String a, String b) { rank(a) >= rank(b) ? a : b }

    void setResult(String r) {
        if (r == null) return
        r = r.toUpperCase()
        if (!RESULT_ORDER.contains(r)) throw new StepFailure("Invalid result: ${r}")
        buildResult = worst(buildResult, r)
    }

    String curStageName() { stageStack ? stageStack[-1].model.name : null }

    void setStageResult(String r) {
        if (stageStack) stageStack[-1].result = worst(stageStack[-1].result, r)
    }

    File cwd() {
        File f = workspace
        dirStack.each { d -> f = new File(d).isAbsolute() ? new File(d) : new File(f, d) }
        f
    }

    File resolve(String p) { new File(p).isAbsolute() ? new File(p) : new File(cwd(), p) }

    void requireNode(String step) {
        if (!nodeAvailable) {
            throw new StepFailure("Required context class hudson.FilePath is missing (step '${step}' in stage " +
                    "'${curStageName()}'). Perhaps you forgot to surround the code with a step that provides this, " +
                    "such as: node")
        }
    }

    // ================================================================ dispatch
    Object dispatch(String name, Object[] args) {
        // closures stored in the script binding (e.g. `deploy = { ... }` at top level) behave like methods
        def bv = binding.getVariables()
        if (bv.containsKey(name) && bv.get(name) instanceof Closure) return ((Closure) bv.get(name)).call(args)
        String k = ctx()
        switch (k) {
            case 'pipeline': return pipelineSection(name, args)
            case 'stages': case 'parallelStages': return stagesSection(k, name, args)
            case 'stage': return stageSection(name, args)
            case 'agent': return agentEntry(name, args)
            case 'tools': return toolEntry(name, args)
            case 'options': case 'stageOptions': return optionEntry(name, args)
            case 'parameters': case 'inputParameters': return parameterEntry(name, args)
            case 'triggers': return triggerEntry(name, args)
            case 'libraries': return null
            case 'when': case 'anyOf': case 'allOf': case 'not': return whenEntry(name, args)
            case 'post': return postEntry(name, args)
            case 'inputDirective': return inputDirectiveEntry(name, args)
            case 'environment':
                if (name == 'credentials') return envCredentials(args)
                return step(name, args)
            default:
                return step(name, args)
        }
    }

    void dup(Map seen, String section, String where) {
        if (seen.containsKey(section)) throw new StructuralError("Multiple occurrences of the ${section} section in ${where}")
        seen[section] = true
    }

    String describeMisplaced(String name, String where) {
        if (KNOWN_STEPS.contains(name) || NOOP_STEPS.contains(name))
            return "Step '${name}' is not allowed directly in ${where}: steps must be inside a stage's steps { } block " +
                    "(or script { } / a post condition)"
        return "Unknown section or directive '${name}' in ${where}"
    }

    // ---------------------------------------------------------------- top level
    Object topPipeline(Object[] args) {
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (pipelineSeen) throw new StructuralError("Only one pipeline { } block is allowed")
        if (body == null) throw new StructuralError("pipeline requires a closure block")
        pipelineSeen = true
        PipelineModel pm = new PipelineModel()
        try {
            withFrame('pipeline', pm) { body.call() }
        } catch (StructuralError e) {
            throw e
        } catch (Throwable e) {
            // Jenkins validates the pipeline block statically; anything that blows up while reading the
            // declarative model (unknown identifiers like `agent anyy`, ...) is a validation error here.
            throw new StructuralError("Invalid pipeline definition: ${msg(e)}")
        }
        if (pm.agent == null) throw new StructuralError("Missing required section 'agent' in pipeline")
        if (pm.stages == null) throw new StructuralError("Missing required section 'stages' in pipeline")
        if (pm.stages.isEmpty()) throw new StructuralError("No stages specified in pipeline")
        runPipeline(pm)
        return null
    }

    Object pipelineSection(String name, Object[] args) {
        PipelineModel pm = (PipelineModel) frame().data
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (PIPELINE_SECTIONS.contains(name)) dup(pm.seen, name, 'pipeline')
        switch (name) {
            case 'agent': pm.agent = parseAgent(named, pos, body); return null
            case 'tools': needBody(name, body); withFrame('tools', pm.tools) { body.call() }; return null
            case 'options': needBody(name, body); withFrame('options', pm.options) { body.call() }; return null
            case 'parameters': needBody(name, body); withFrame('parameters', pm.parameters) { body.call() }; return null
            case 'triggers': needBody(name, body); withFrame('triggers', pm.triggers) { body.call() }; return null
            case 'libraries': needBody(name, body); withFrame('libraries', null) { body.call() }; return null
            case 'environment': needBody(name, body); pm.envClosure = body; return null
            case 'stages':
                needBody(name, body)
                pm.stages = []
                withFrame('stages', [list: pm.stages, parent: null]) { body.call() }
                return null
            case 'post': needBody(name, body); withFrame('post', pm.post) { body.call() }; return null
            case 'when': throw new StructuralError("'when' is only allowed inside a stage, not directly in pipeline")
            case 'stage': throw new StructuralError("stage('${pos ? pos[0] : ''}') must be inside a stages { } block, not directly in pipeline")
            case 'steps': throw new StructuralError("'steps' is only allowed inside a stage, not directly in pipeline")
            case 'pipeline': throw new StructuralError("Nested pipeline { } block")
        }
        throw new StructuralError(describeMisplaced(name, 'pipeline'))
    }

    void needBody(String name, Closure body) {
        if (body == null) throw new StructuralError("Section '${name}' requires a { } block")
    }

    Map parseAgent(Map named, List pos, Closure body) {
        if (body != null) {
            Map a = [type: 'custom']
            withFrame('agent', a) { body.call() }
            return a
        }
        if (pos.size() == 1 && pos[0] instanceof Marker && ((Marker) pos[0]).name in ['any', 'none'])
            return [type: ((Marker) pos[0]).name]
        throw new StructuralError("Invalid agent type specified: ${pos ? pos[0] : named}. Must be one of [any, none] or a { } block")
    }

    Object agentEntry(String name, Object[] args) {
        Map a = (Map) frame().data
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (STEP_CONTEXTS.contains(name) || KNOWN_STEPS.contains(name) && !(name in ['node', 'dir']))
            throw new StructuralError(describeMisplaced(name, 'agent'))
        if (body != null) {
            Map sub = [:]
            withFrame('agent', sub) { body.call() }
            a[name] = sub
            if (a.type == 'custom') a.type = name
        } else {
            a[name] = pos ? plain(pos[0]) : plain(named)
            if (a.type == 'custom' && name in ['label', 'docker', 'dockerfile', 'kubernetes']) a.type = name
        }
        return null
    }

    Object toolEntry(String name, Object[] args) {
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (body != null || pos.size() != 1 || KNOWN_STEPS.contains(name))
            throw new StructuralError("Invalid tools entry '${name}': expected `toolType 'name'`")
        ((Map) frame().data)[name] = plain(pos[0])
        return null
    }

    Object optionEntry(String name, Object[] args) {
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (name == 'logRotator') return [logRotator: plain(named)]
        if (!OPTIONS.contains(name)) throw new StructuralError("Invalid option type \"${name}\" in options { }")
        if (body != null) throw new StructuralError("Option '${name}' does not take a block inside options { }")
        Map opts = (Map) frame().data
        def v
        if (name == 'buildDiscarder') v = pos ? plain(pos[0]) : plain(named)
        else if (pos) v = [value: plain(pos.size() == 1 ? pos[0] : pos)] + plain(named)
        else v = plain(named)
        opts[name] = v
        return null
    }

    Object parameterEntry(String name, Object[] args) {
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (!PARAM_TYPES.contains(name)) throw new StructuralError("Invalid parameter type \"${name}\" in parameters { }")
        Map p = paramDescriptor(name, named)
        if (p.name == null) throw new StructuralError("Parameter of type ${name} is missing its 'name'")
        ((List) frame().data) << p
        return null
    }

    Map paramDescriptor(String type, Map named) {
        Map p = [type: type] + (Map) plain(named)
        if (type == 'choice') {
            def ch = named.choices
            if (ch instanceof CharSequence) ch = ch.toString().split('\n') as List
            p.choices = plain(ch ?: [])
        }
        return p
    }

    Object triggerEntry(String name, Object[] args) {
        def (Map named, List pos, Closure body) = splitArgs(args)
        ((List) frame().data) << [type: name, args: plain(pos ? pos : named)]
        return null
    }

    // ---------------------------------------------------------------- stages / stage
    Object stagesSection(String kind, String name, Object[] args) {
        Map d = (Map) frame().data
        def (Map named, List pos, Closure body) = splitArgs(args)
        String where = kind == 'stages' ? 'stages { }' : 'parallel { }'
        if (name == 'when') throw new StructuralError("'when' is only allowed inside a stage, not directly in ${where}")
        if (name != 'stage') {
            if (KNOWN_STEPS.contains(name) || NOOP_STEPS.contains(name))
                throw new StructuralError("Step '${name}' is not allowed directly in ${where}: expected stage('name') { ... }")
            throw new StructuralError("Expected a stage in ${where}, found '${name}'")
        }
        if (pos.size() != 1 || body == null) throw new StructuralError("stage requires a name and a { } block: stage('name') { ... }")
        StageModel st = new StageModel(name: pos[0]?.toString(), parent: (StageModel) d.parent)
        if (!stageNames.add(st.name)) throw new StructuralError("Duplicate stage name: \"${st.name}\"")
        withFrame('stage', st) { body.call() }
        int n = (st.steps != null ? 1 : 0) + (st.stages != null ? 1 : 0) + (st.parallel != null ? 1 : 0)
        if (n == 0) throw new StructuralError("Stage \"${st.name}\" has no steps, stages or parallel: exactly one of them is required")
        if (n > 1) throw new StructuralError("Stage \"${st.name}\" has more than one of steps, stages, parallel: only one may be used")
        if (st.stages != null && st.stages.isEmpty()) throw new StructuralError("No stages specified in nested stages of \"${st.name}\"")
        if (st.parallel != null && st.parallel.isEmpty()) throw new StructuralError("No stages specified in parallel of \"${st.name}\"")
        ((List) d.list) << st
        return null
    }

    Object stageSection(String name, Object[] args) {
        StageModel st = (StageModel) frame().data
        def (Map named, List pos, Closure body) = splitArgs(args)
        String where = "stage \"${st.name}\""
        if (STAGE_SECTIONS.contains(name)) dup(st.seen, name, where)
        switch (name) {
            case 'agent': st.agent = parseAgent(named, pos, body); return null
            case 'tools': needBody(name, body); withFrame('tools', st.tools) { body.call() }; return null
            case 'options': needBody(name, body); withFrame('stageOptions', st.options) { body.call() }; return null
            case 'environment': needBody(name, body); st.envClosure = body; return null
            case 'when':
                needBody(name, body)
                st.when = []
                withFrame('when', [list: st.when, flags: st.whenFlags]) { body.call() }
                if (st.when.isEmpty()) throw new StructuralError("Empty when closure in ${where}: at least one condition is required")
                return null
            case 'input':
                if (body != null) {
                    st.input = [message: null, ok: null, parameters: []]
                    withFrame('inputDirective', st.input) { body.call() }
                } else st.input = (Map) plain(named)
                if (!st.input.message) throw new StructuralError("input directive in ${where} requires a message")
                return null
            case 'steps': needBody(name, body); st.steps = body; return null
            case 'stages':
                needBody(name, body)
                st.stages = []
                withFrame('stages', [list: st.stages, parent: st]) { body.call() }
                return null
            case 'parallel':
                needBody(name, body)
                st.parallel = []
                withFrame('parallelStages', [list: st.parallel, parent: st]) { body.call() }
                return null
            case 'matrix': throw new StructuralError("matrix in ${where} is not supported by this harness")
            case 'post': needBody(name, body); withFrame('post', st.post) { body.call() }; return null
            case 'failFast': st.failFast = pos ? DefaultTypeTransformation.castToBoolean(pos[0]) : true; return null
            case 'stage': throw new StructuralError("stage('${pos ? pos[0] : ''}') directly inside ${where}: nested stages must be inside stages { } or parallel { }")
        }
        if (name == 'script')
            throw new StructuralError("'script' is not allowed directly in ${where}: it must be inside steps { }")
        if (KNOWN_STEPS.contains(name) || NOOP_STEPS.contains(name))
            throw new StructuralError("Unknown stage section \"${name}\" in ${where}. Steps in a stage must be in a 'steps' block")
        throw new StructuralError("Unknown stage section \"${name}\" in ${where}")
    }

    Object inputDirectiveEntry(String name, Object[] args) {
        Map inp = (Map) frame().data
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (name == 'parameters') {
            needBody(name, body)
            withFrame('inputParameters', inp.parameters) { body.call() }
            return null
        }
        if (!(name in ['message', 'ok', 'id', 'submitter', 'submitterParameter']))
            throw new StructuralError("Invalid input directive option '${name}'")
        inp[name] = plain(pos ? pos[0] : named)
        return null
    }

    // ---------------------------------------------------------------- when
    Object whenEntry(String name, Object[] args) {
        Map d = (Map) frame().data
        String k = ctx()
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (WHEN_FLAGS.contains(name)) {
            if (k != 'when') throw new StructuralError("'${name}' is only allowed directly in when { }")
            d.flags[name] = pos ? DefaultTypeTransformation.castToBoolean(pos[0]) : true
            return null
        }
        if (!WHEN_CONDS.contains(name)) {
            if (KNOWN_STEPS.contains(name)) throw new StructuralError("Step '${name}' is not allowed in when { }: use expression { }")
            throw new StructuralError("Unknown when condition '${name}'")
        }
        Cond c = new Cond(type: name, named: named)
        if (name in ['not', 'anyOf', 'allOf']) {
            needBody(name, body)
            Map sub = [list: c.children, flags: [:]]
            withFrame(name, sub) { body.call() }
            if (c.children.isEmpty()) throw new StructuralError("Empty ${name} { } in when")
            if (name == 'not' && c.children.size() != 1) throw new StructuralError("not { } in when must contain exactly one condition")
        } else if (name == 'expression') {
            if (body == null) throw new StructuralError("expression in when requires a { } block")
            c.expr = body
        } else {
            c.arg = pos ? pos[0] : (named.pattern ?: named.value)
        }
        ((List) d.list) << c
        return null
    }

    boolean globMatch(String pattern, String value, String comparator) {
        if (value == null || pattern == null) return false
        comparator = (comparator ?: 'GLOB').toUpperCase()
        if (comparator == 'EQUALS') return pattern == value
        if (comparator == 'REGEXP') return value ==~ pattern
        StringBuilder re = new StringBuilder()
        int i = 0
        while (i < pattern.length()) {
            char ch = pattern.charAt(i)
            if (ch == '*' as char) {
                if (i + 1 < pattern.length() && pattern.charAt(i + 1) == '*' as char) { re.append('.*'); i++ }
                else re.append('[^/]*')
            } else if (ch == '?' as char) re.append('[^/]')
            else re.append(java.util.regex.Pattern.quote(String.valueOf(ch)))
            i++
        }
        return value ==~ re.toString()
    }

    boolean evalCond(Cond c) {
        Map<String, String> env = envFlat()
        switch (c.type) {
            case 'branch':
                return globMatch(c.arg?.toString(), env.get('BRANCH_NAME'), c.named.comparator?.toString())
            case 'expression':
                def r = withFrame('expression', null) { c.expr.call() }
                return DefaultTypeTransformation.castToBoolean(r)
            case 'environment':
                def actual = env.get(c.named.name?.toString())
                def expected = c.named.value?.toString()
                if (c.named.ignoreCase) return actual != null && actual.equalsIgnoreCase(expected)
                return actual == expected
            case 'equals':
                def a = c.named.actual
                if (a instanceof Closure) a = a.call()
                def e = c.named.expected
                return (e instanceof CharSequence ? e.toString() : e) == (a instanceof CharSequence ? a.toString() : a)
            case 'not': return !evalCond(c.children[0])
            case 'anyOf': return c.children.any { evalCond(it) }
            case 'allOf': return c.children.every { evalCond(it) }
            case 'buildingTag': return env.get('TAG_NAME') != null
            case 'tag': return c.arg == null ? env.get('TAG_NAME') != null : globMatch(c.arg.toString(), env.get('TAG_NAME'), c.named.comparator?.toString())
            case 'changeRequest': return env.get('CHANGE_ID') != null
            default: return false   // changeset, changelog, triggeredBy, isRestartedRun: no SCM/causes here
        }
    }

    // ---------------------------------------------------------------- post
    Object postEntry(String name, Object[] args) {
        Map post = (Map) frame().data
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (!POST_CONDITIONS.contains(name))
            throw new StructuralError("Invalid condition \"${name}\" in post - valid conditions are ${POST_CONDITIONS}")
        if (body == null) throw new StructuralError("post condition '${name}' requires a { } block")
        if (post.containsKey(name)) throw new StructuralError("Duplicate post condition '${name}'")
        post[name] = body
        return null
    }

    boolean postMet(String c, String res) {
        String prev = previousResult
        switch (c) {
            case 'always': case 'cleanup': return true
            case 'changed': return prev != null && prev != res
            case 'fixed': return prev != null && res == 'SUCCESS' && prev in ['FAILURE', 'UNSTABLE']
            case 'regression': return prev == 'SUCCESS' && res in ['FAILURE', 'UNSTABLE', 'ABORTED']
            case 'aborted': return res == 'ABORTED'
            case 'failure': return res == 'FAILURE'
            case 'success': return res == 'SUCCESS'
            case 'unstable': return res == 'UNSTABLE'
            case 'unsuccessful': return res != 'SUCCESS'
            case 'notBuilt': return res == 'NOT_BUILT'
        }
        return false
    }

    void runPost(Map post, String scope, Closure resultNow) {
        POST_CONDITIONS.each { String c ->
            Closure body = (Closure) post[c]
            if (body == null) return
            String res = resultNow.call()
            if (!postMet(c, res)) return
            log("post ${scope}: ${c}")
            postOut << [scope: scope, condition: c]
            try {
                withFrame('postCond', c) { body.call() }
            } catch (StructuralError e) {
                throw e
            } catch (AbortError e) {
                setResult('ABORTED'); setStageResult('ABORTED'); errorsOut << [stage: curStageName(), post: c, message: e.message]
            } catch (Throwable e) {
                setResult('FAILURE'); setStageResult('FAILURE'); errorsOut << [stage: curStageName(), post: c, message: msg(e)]
                log("post ${scope} ${c} failed: ${msg(e)}")
            }
        }
    }

    static String msg(Throwable e) {
        if (e instanceof StepFailure || e instanceof AbortError) return e.message
        return "${e.class.name}: ${e.message}".toString()
    }

    // ================================================================ timeouts
    // Models workflow-basic-steps' TimeoutStepExecution: when the time is up the body is
    // interrupted (the running `sh` is stopped, the build becomes ABORTED: "Timeout has been
    // exceeded"); what still runs inside the body afterwards (a pipeline-level timeout wraps `post`
    // too: pipeline-model-definition's ModelInterpreter runs the post section inside the options'
    // wrappers) has GRACE_PERIOD, 60 s, after which it is killed ("Body did not finish within grace
    // period; terminating with extreme prejudice"). A stopped `sh` has its whole process tree
    // killed, found by an environment cookie as Jenkins' ProcessTree finds it (JENKINS_NODE_COOKIE).
    // --timeout-grace SECS shortens the grace for self-tests.
    List<Map> timeoutFrames = []
    long timeoutGraceMs = 60000L

    static long durationMs(Object spec) {
        Map m = spec instanceof Map ? (Map) spec : [time: spec]
        long t = ((m.time ?: m.value) as Number).longValue()
        String unit = (m.unit ?: 'MINUTES').toString()
        Map<String, Long> per = [NANOSECONDS: 0L, MICROSECONDS: 0L, MILLISECONDS: 1L, SECONDS: 1000L,
                                 MINUTES: 60000L, HOURS: 3600000L, DAYS: 86400000L]
        if (!per.containsKey(unit)) throw new StepFailure("timeout: unknown unit ${unit}")
        return t * per[unit]
    }

    Object withTimeout(Object spec, String label, Closure body) {
        Map f = [label: label, deadline: System.currentTimeMillis() + durationMs(spec), firedAt: null]
        timeoutFrames << f
        try { return body.call() } finally { timeoutFrames.remove(timeoutFrames.size() - 1) }
    }

    /** The frame whose limit comes first, and that limit (a fired frame's: its grace's end). */
    List nextLimit() {
        Map best = null
        long at = Long.MAX_VALUE
        timeoutFrames.each { Map f ->
            long l = f.firedAt != null ? ((long) f.firedAt) + timeoutGraceMs : (long) f.deadline
            if (l < at) { at = l; best = f }
        }
        return [best, at]
    }

    /** What reaching a frame's limit does: the first time, the timeout fires; then the grace ends. */
    AbortError limitReached(Map f) {
        if (f.firedAt == null) {
            f.firedAt = System.currentTimeMillis()
            log("timeout (${f.label}): Timeout has been exceeded")
            return new AbortError("Timeout has been exceeded (${f.label})")
        }
        log("timeout (${f.label}): the grace period is over: killing what still runs")
        return new AbortError("Body did not finish within grace period; terminating with extreme prejudice (${f.label})")
    }

    /** Kills every process whose environment holds the cookie, as ProcessTree.killAll does. */
    static void killByCookie(String cookie) {
        String mine = "BG_HARNESS_COOKIE=${cookie}".toString()
        new File('/proc').listFiles().findAll { it.name ==~ /\d+/ }.each { File d ->
            try {
                byte[] env = new File(d, 'environ').bytes
                if (new String(env, 'UTF-8').split('\u0000').contains(mine))
                    ['kill', '-KILL', d.name].execute().waitFor()
            } catch (IOException ignored) { }
        }
    }

    // ================================================================ execution
    void runPipeline(PipelineModel pm) {
        agentOut = pm.agent
        optionsOut = (Map) plain(pm.options)
        parametersOut = (List) plain(pm.parameters)
        toolsOut = (Map) plain(pm.tools)
        triggersOut = (List) plain(pm.triggers)
        // params: declared defaults (unless first build) overridden by --param; booleans parsed
        Map p = [:]
        pm.parameters.each { Map d ->
            if (firstBuild) return
            def dv = d.defaultValue
            if (d.type == 'booleanParam') dv = dv == null ? false : DefaultTypeTransformation.castToBoolean(dv)
            else if (d.type == 'choice') dv = d.choices ? d.choices[0] : null
            else if (dv == null && d.type in ['string', 'text', 'password']) dv = ''
            p[d.name] = dv
        }
        cliParams.each { k, v ->
            def decl = pm.parameters.find { it.name == k }
            if ((decl == null || decl.type == 'booleanParam') && (v == 'true' || v == 'false')) p[k] = (v == 'true')
            else p[k] = v
        }
        params = Collections.unmodifiableMap(p)
        nodeAvailable = false
        checkout = workspace
        if (runMode) {
            // What declarative's implicit `checkout scm` gives each stage's agent: --workspace as
            // it is when the build starts.
            checkoutCopy = new File(tmpDir, 'checkout')
            checkoutCopy.mkdirs()
            copyTree(workspace, checkoutCopy)
        }
        // Jenkins exposes the build's parameters as environment variables too (ParametersAction
        // contributes them), so a sh step reads $NAME as well as Groovy's params.NAME.
        Map<String, String> topEnv = [:]
        params.each { k, v -> if (v != null) topEnv[k.toString()] = v.toString() }
        Closure whole = {
            try {
                if (pm.envClosure != null) evalEnvironment(pm.envClosure, topEnv)
                runStages(pm.stages, null)
            } catch (StructuralError e) {
                throw e
            } catch (AbortError e) {
                setResult('ABORTED'); halted = true; errorsOut << [stage: null, message: e.message]
            } catch (Throwable e) {
                setResult('FAILURE'); halted = true; errorsOut << [stage: null, message: msg(e)]
            }
            runPost(pm.post, 'pipeline') { buildResult }
        }
        // The top-level agent holds its executor and workspace for the whole build, post included.
        Closure onTop = pm.agent.type != 'none' ? { onAgent('pipeline', null, true, whole) } : whole
        withEnvLayer(topEnv) {
            // The pipeline's options { timeout } wraps the stages and the post section alike.
            if (optionsOut.timeout != null) withTimeout(optionsOut.timeout, 'pipeline options', onTop)
            else onTop.call()
        }
    }

    void evalEnvironment(Closure c, Map<String, String> target) {
        Map old = envAssignTarget
        envAssignTarget = target
        try { withFrame('environment', target) { c.call() } } finally { envAssignTarget = old }
    }

    String runStages(List<StageModel> list, StageModel parent) {
        String worstStatus = 'success'
        list.each { StageModel st ->
            String s = halted ? skipStage(st, parent, abortedSeen ? 'aborted earlier' : 'earlier failure') : runStage(st, parent)
            if (s in ['failed', 'aborted'] && worstStatus != 'aborted') worstStatus = s
            else if (s == 'unstable' && worstStatus == 'success') worstStatus = s
        }
        return worstStatus
    }

    boolean abortedSeen = false

    String skipStage(StageModel st, StageModel parent, String reason) {
        stagesOut << [name: st.name, status: 'skipped', parent: parent?.name, reason: reason]
        log("stage ${st.name}: skipped (${reason})")
        (st.stages ?: []).each { skipStage(it, st, 'parent skipped') }
        (st.parallel ?: []).each { skipStage(it, st, 'parent skipped') }
        return 'skipped'
    }

    String runStage(StageModel st, StageModel parent) {
        Map entry = [name: st.name, status: 'running', parent: parent?.name]
        if (st.options) entry.options = plain(st.options)
        if (st.agent) entry.agent = st.agent
        stagesOut << entry
        log("stage ${st.name}")
        StageFrame sf = new StageFrame(model: st, entry: entry)
        stageStack << sf
        Map<String, String> layer = [:]
        envLayers << layer
        boolean skipped = false
        // The order pipeline-model-definition's ModelInterpreter.evaluateStage runs a stage in: the
        // stage's options (a timeout) wrap all of it; inside them the input directive waits first,
        // before any agent is taken; then `when` (before the agent with beforeAgent, else on it);
        // then the stage's agent, and on it the environment, the steps or nested stages, and the
        // stage's post (executeSingleStage runs post in a finally, inside the agent and the
        // options' timeout; a parent's post runs at the end of its nested stages, likewise).
        Closure onItsAgent = {
            if (st.when != null && !whenEarly(st) && !st.when.every { evalCond(it) }) { skipped = true; return }
            try {
                if (st.envClosure != null) evalEnvironment(st.envClosure, layer)
                if (abortAtStage != null && abortAtStage == st.name) throw new AbortError("Simulated abort/timeout at stage '${st.name}'")
                if (st.steps != null) {
                    withFrame('steps', st) { st.steps.call() }
                } else if (st.stages != null) {
                    String s = runStages(st.stages, st)
                    if (s == 'failed') sf.result = worst(sf.result, 'FAILURE')
                    else if (s == 'aborted') sf.result = worst(sf.result, 'ABORTED')
                    else if (s == 'unstable') sf.result = worst(sf.result, 'UNSTABLE')
                } else {
                    runParallel(st, sf)
                }
            } catch (StructuralError e) {
                throw e
            } catch (Throwable e) {
                stageError(st, sf, e)
            } finally {
                runPost(st.post, st.name) { worst(sf.result, buildResult) }
            }
        }
        Closure inOptions = {
            Map f = st.whenFlags
            if (st.when != null && f.beforeInput && !f.beforeOptions && !st.when.every { evalCond(it) }) { skipped = true; return }
            if (st.input != null) doInput((Map) st.input)
            if (st.when != null && f.beforeAgent && !f.beforeInput && !f.beforeOptions && !st.when.every { evalCond(it) }) { skipped = true; return }
            if (st.agent != null && st.agent.type != 'none') onAgent('stage', st.name, true, onItsAgent)
            else if (st.agent != null) withoutAgent(onItsAgent)
            else onItsAgent.call()
        }
        try {
            if (st.when != null && st.whenFlags.beforeOptions && !st.when.every { evalCond(it) }) skipped = true
            else if (st.options?.timeout != null) withTimeout(st.options.timeout, "stage ${st.name}", inOptions)
            else inOptions.call()
        } catch (StructuralError e) {
            throw e
        } catch (Throwable e) {
            stageError(st, sf, e)
        } finally {
            envLayers.remove(envLayers.size() - 1)
            stageStack.remove(stageStack.size() - 1)
        }
        if (skipped) {
            entry.status = 'skipped'
            entry.reason = 'when'
            log("stage ${st.name}: skipped due to when conditional")
            (st.stages ?: []).each { skipStage(it, st, 'parent skipped') }
            (st.parallel ?: []).each { skipStage(it, st, 'parent skipped') }
            return 'skipped'
        }
        if (rank(sf.result) >= rank('FAILURE') && !halted) halted = true
        entry.status = statusOf(sf.result)
        return entry.status
    }

    static boolean whenEarly(StageModel st) {
        st.whenFlags.beforeAgent || st.whenFlags.beforeInput || st.whenFlags.beforeOptions
    }

    void stageError(StageModel st, StageFrame sf, Throwable e) {
        if (e instanceof AbortError) {
            sf.result = 'ABORTED'; setResult('ABORTED'); halted = true; abortedSeen = true
            errorsOut << [stage: st.name, message: e.message]
            log("stage ${st.name}: aborted: ${e.message}")
        } else {
            sf.result = worst(sf.result, 'FAILURE'); setResult('FAILURE'); halted = true
            errorsOut << [stage: st.name, message: msg(e)]
            log("stage ${st.name}: failed: ${msg(e)}")
        }
    }

    // ---------------------------------------------------------------- agents and workspaces
    // Each agent allocation is an executor and a workspace of its own (workflow-durable-task-step's
    // ExecutorStep, the `node` step, which declarative's `agent any` runs through
    // pipeline-model-definition's AnyScript, with `checkout scm` unless skipDefaultCheckout): the
    // pipeline's top-level agent (ModelInterpreter wraps the whole build in it, post included), a
    // stage's agent (inDeclarativeAgent: that stage, its nested stages and its post), a `node`
    // step (its body). The top-level agent's workspace is
    // --workspace; every other allocation gets a fresh directory, as if it ran on another agent,
    // holding what declarative's implicit `checkout scm` gives a stage's agent (a copy of
    // --workspace as it was when the build started; nothing with skipDefaultCheckout) or, for a
    // `node` step, which checks nothing out, nothing. What one allocation writes reaches another
    // only through stash/unstash. Each is recorded in `agents`; an `input` records whether it
    // waited holding an executor.
    List agentsOut = []
    File checkout
    File checkoutCopy

    def onAgent(String kind, String where, boolean scm, Closure body) {
        File ws
        if (kind == 'pipeline') {
            ws = workspace
        } else {
            ws = new File(tmpDir, "agent-${agentsOut.size() + 1}/workspace")
            ws.mkdirs()
            if (scm && runMode && !optionsOut.containsKey('skipDefaultCheckout')) copyTree(checkoutCopy, ws)
        }
        Map rec = [id: agentsOut.size() + 1, kind: kind, stage: where, workspace: ws.path,
                   checkout: kind == 'pipeline' || (scm && !optionsOut.containsKey('skipDefaultCheckout'))]
        agentsOut << rec
        log("agent ${rec.id} (${kind}${where ? ' ' + where : ''}): ${ws}")
        File savedWs = workspace
        boolean savedNode = nodeAvailable
        List<String> savedDirs = dirStack
        workspace = ws; nodeAvailable = true; dirStack = []
        try {
            return withEnvLayer([WORKSPACE: ws.absolutePath]) { body.call() }
        } finally {
            workspace = savedWs; nodeAvailable = savedNode; dirStack = savedDirs
        }
    }

    def withoutAgent(Closure body) {
        boolean savedNode = nodeAvailable
        nodeAvailable = false
        try { return body.call() } finally { nodeAvailable = savedNode }
    }

    static void copyTree(File from, File to) {
        if (from == null || !from.isDirectory()) return
        Process p = ['cp', '-a', from.absolutePath + '/.', to.absolutePath].execute()
        p.consumeProcessOutput(System.err, System.err)
        if (p.waitFor() != 0) throw new StepFailure("harness: cannot copy the checkout into ${to}")
    }

    // ---------------------------------------------------------------- stash / unstash
    // workflow-basic-steps' StashStep and UnstashStep (StashManager): a stash is the files of the
    // workspace matching `includes` (Ant patterns, comma-separated; all files by default) less
    // `excludes` and, unless useDefaultExcludes: false, Ant's default excludes, kept for the rest
    // of the build under its name (a later stash of the name replaces it) and unpacked, file modes
    // kept, into whatever workspace unstashes it. An empty stash fails ("No files included in stash
    // ‘NAME’") unless allowEmpty: true; unstashing a name never stashed fails ("No such saved stash
    // ‘NAME’").
    static final List DEFAULT_EXCLUDES = ['**/*~', '**/#*#', '**/.#*', '**/%*%', '**/._*', '**/CVS', '**/CVS/**',
                                          '**/.cvsignore', '**/.svn', '**/.svn/**', '**/.git', '**/.git/**',
                                          '**/.gitignore', '**/.gitmodules', '**/.hg', '**/.hg/**', '**/.DS_Store']
    Map<String, File> stashes = [:]
    List stashesOut = []

    static java.util.regex.Pattern antPattern(String p) {
        p = p.trim().replace('\\', '/')
        if (p.endsWith('/')) p += '**'
        StringBuilder sb = new StringBuilder()
        int i = 0
        while (i < p.length()) {
            if (p.startsWith('**/', i)) { sb.append('(?:.*/)?'); i += 3 }
            else if (p.startsWith('**', i)) { sb.append('.*'); i += 2 }
            else if (p.charAt(i) == '*' as char) { sb.append('[^/]*'); i++ }
            else if (p.charAt(i) == '?' as char) { sb.append('[^/]'); i++ }
            else { sb.append(java.util.regex.Pattern.quote(p.substring(i, i + 1))); i++ }
        }
        java.util.regex.Pattern.compile(sb.toString())
    }

    static List<java.util.regex.Pattern> antPatterns(Object spec) {
        (spec ?: '').toString().split(',').findAll { it.trim() }.collect { antPattern(it) }
    }

    Object stashStep(Map named, List pos) {
        String name = (named.name ?: (pos ? pos[0] : null))?.toString()
        if (!name) throw new StepFailure("stash requires a name")
        List inc = antPatterns(named.includes)
        if (inc.isEmpty()) inc = [antPattern('**')]
        List exc = antPatterns(named.excludes)
        if (named.useDefaultExcludes == null || DefaultTypeTransformation.castToBoolean(named.useDefaultExcludes))
            exc += DEFAULT_EXCLUDES.collect { antPattern(it) }
        Map rec = [op: 'stash', name: name, stage: curStageName(), includes: named.includes?.toString()]
        stashesOut << rec
        if (!runMode) { stashes[name] = null; return null }
        File base = cwd()
        List<String> files = []
        if (base.isDirectory()) {
            base.eachFileRecurse { File f ->
                if (f.isDirectory() && !Files.isSymbolicLink(f.toPath())) return
                String rel = base.toPath().relativize(f.toPath()).toString()
                if (inc.any { it.matcher(rel).matches() } && !exc.any { it.matcher(rel).matches() }) files << rel
            }
        }
        rec.files = files.size()
        if (files.isEmpty() && !DefaultTypeTransformation.castToBoolean(named.allowEmpty))
            throw new StepFailure("No files included in stash \u2018${name}\u2019")
        File list = new File(tmpDir, "stash-${UUID.randomUUID()}.list")
        list.setText(files.sort().join('\u0000') + (files ? '\u0000' : ''), 'UTF-8')
        File tar = new File(tmpDir, "stash-${name.replaceAll(/[^A-Za-z0-9_.-]/, '_')}-${UUID.randomUUID()}.tar")
        Process p = ['tar', '-C', base.absolutePath, '--null', '-T', list.absolutePath, '-cf', tar.absolutePath].execute()
        p.consumeProcessOutput(System.err, System.err)
        if (p.waitFor() != 0) throw new StepFailure("stash ${name}: tar failed")
        list.delete()
        stashes[name]?.delete()
        stashes[name] = tar
        log("stash ${name}: ${files.size()} files")
        return null
    }

    Object unstashStep(Map named, List pos) {
        String name = (named.name ?: (pos ? pos[0] : null))?.toString()
        if (!name) throw new StepFailure("unstash requires a name")
        stashesOut << [op: 'unstash', name: name, stage: curStageName()]
        if (!stashes.containsKey(name)) throw new StepFailure("No such saved stash \u2018${name}\u2019")
        if (!runMode) return null
        File base = cwd()
        base.mkdirs()
        Process p = ['tar', '-C', base.absolutePath, '-xpf', stashes[name].absolutePath].execute()
        p.consumeProcessOutput(System.err, System.err)
        if (p.waitFor() != 0) throw new StepFailure("unstash ${name}: tar failed")
        log("unstash ${name} into ${base}")
        return null
    }

    static String statusOf(String r) {
        switch (r) {
            case 'SUCCESS': return 'success'
            case 'UNSTABLE': return 'unstable'
            case 'ABORTED': return 'aborted'
            default: return 'failed'
        }
    }

    void runParallel(StageModel st, StageFrame sf) {
        boolean failFast = st.failFast || optionsOut.containsKey('parallelsAlwaysFailFast')
        boolean anyFailed = false
        boolean anyAborted = false
        st.parallel.each { StageModel b ->
            if (failFast && (anyFailed || anyAborted)) { skipStage(b, st, 'failFast'); return }
            halted = false
            String s = runStage(b, st)
            if (s == 'failed') anyFailed = true
            if (s == 'aborted') anyAborted = true
            if (s == 'unstable') sf.result = worst(sf.result, 'UNSTABLE')
        }
        halted = anyFailed || anyAborted
        if (anyAborted) sf.result = worst(sf.result, 'ABORTED')
        else if (anyFailed) sf.result = worst(sf.result, 'FAILURE')
    }

    // ================================================================ steps
    Object step(String name, Object[] args) {
        String k = ctx()
        def (Map named, List pos, Closure body) = splitArgs(args)
        if (k == 'top' && name == 'pipeline') return topPipeline(args)
        if (name in ['pipeline', 'agent', 'stages', 'steps', 'post', 'when', 'options', 'tools', 'parameters',
                     'environment', 'triggers']) {
            throw new StructuralError("'${name}' is a declarative section and cannot be used inside ${k == 'top' ? 'the script outside pipeline' : k} (stage ${curStageName()})")
        }
        stepsOut << [name: name, stage: curStageName()]
        if (NODE_STEPS.contains(name)) requireNode(name)
        switch (name) {
            case 'echo':
                String m = (pos ? pos[0] : named.message)?.toString()
                echoOut << m
                if (!quiet) System.err.println("[echo] " + m)
                return null
            case 'error':
                throw new StepFailure((pos ? pos[0] : named.message)?.toString())
            case 'sh': return shStep(named, pos)
            case 'bat': throw new StepFailure("bat is not supported on this (Unix) harness")
            case 'script':
                if (body == null) throw new StructuralError("script requires a { } block")
                return withFrame('script', null) { body.call() }
            case 'slackSend':
                if (failSteps.contains('slackSend')) throw new StepFailure("slackSend failed (--fail-step slackSend)")
                Map m = (Map) plain(named)
                if (pos && !named) m = [message: plain(pos[0])]
                m.stage = curStageName()
                slackOut << m
                log("slackSend ${m.channel ?: ''} ${m.color ?: ''}: ${m.message}")
                return [threadId: 'harness-thread', channelId: m.channel, ts: '0']
            case 'input': return doInput(pos && !named ? [message: plain(pos[0])] : named)
            case 'timeout':
                if (body == null) throw new StepFailure("timeout step requires a body")
                return withTimeout(named ?: (pos ? pos[0] : null), 'timeout step') { withFrame('block', 'timeout') { body.call() } }
            case 'writeFile':
                String f = (named.file ?: (pos ? pos[0] : null))?.toString()
                String text = named.text?.toString()
                if (f == null || text == null) throw new StepFailure("writeFile requires file: and text:")
                filesOut << [file: f, stage: curStageName(), length: text.length()]
                if (runMode) {
                    File out = resolve(f)
                    out.parentFile?.mkdirs()
                    out.setText(text, (named.encoding ?: 'UTF-8').toString())
                } else virtualFiles[resolve(f).path] = text
                return null
            case 'readFile':
                String f = (named.file ?: (pos ? pos[0] : null))?.toString()
                if (f == null) throw new StepFailure("readFile requires a file")
                File rf = resolve(f)
                if (!runMode && virtualFiles.containsKey(rf.path)) return virtualFiles[rf.path]
                if (!rf.isFile()) throw new StepFailure("java.nio.file.NoSuchFileException: ${rf.path}")
                return rf.getText((named.encoding ?: 'UTF-8').toString())
            case 'fileExists':
                String f = (named.file ?: (pos ? pos[0] : null))?.toString()
                File rf = resolve(f ?: '.')
                return (!runMode && virtualFiles.containsKey(rf.path)) || rf.exists()
            case 'dir':
                String d = (named.path ?: (pos ? pos[0] : null))?.toString()
                if (d == null || body == null) throw new StepFailure("dir requires a path and a body")
                dirStack << d
                try {
                    if (runMode) cwd().mkdirs()
                    return withFrame('block', 'dir') { body.call() }
                } finally { dirStack.remove(dirStack.size() - 1) }
            case 'pwd': return cwd().path
            case 'isUnix': return true
            case 'tool': return "/harness/tools/${pos ? pos[0] : named.name}".toString()
            case 'withCredentials':
                if (body == null || !pos || !(pos[0] instanceof List)) throw new StepFailure("withCredentials requires a list of bindings and a body")
                return withCredentials((List) pos[0], body)
            case 'withEnv':
                if (body == null || !pos) throw new StepFailure("withEnv requires a list and a body")
                Map<String, String> layer = [:]
                ((List) pos[0]).each { String kv = it.toString(); int i = kv.indexOf('='); if (i > 0) layer[kv.substring(0, i)] = kv.substring(i + 1) }
                return withEnvLayer(layer) { withFrame('block', 'withEnv') { body.call() } }
            case 'sshagent':
                List ids = (List) (named.credentials ?: (pos ? pos[0] : []))
                ids.each { String id = it.toString(); lookupCred(id); credentialsOut << id }
                if (body == null) throw new StepFailure("sshagent requires a body")
                return withFrame('block', 'sshagent') { body.call() }
            case 'node':
                // A node step allocates an executor and a workspace of its own; it checks nothing out.
                if (body == null) throw new StepFailure("node requires a body")
                return onAgent('node', curStageName(), false) { withFrame('block', 'node') { body.call() } }
            case 'stash': return stashStep(named, pos)
            case 'unstash': return unstashStep(named, pos)
            case 'lock': case 'timestamps': case 'ansiColor': case 'stage':
                if (body == null) throw new StepFailure("${name} requires a body")
                return withFrame('block', name) { body.call() }
            case 'retry':
                int n = ((pos ? pos[0] : named.count) ?: 1) as int
                for (int i = 1; ; i++) {
                    try { return withFrame('block', 'retry') { body.call() } }
                    catch (StructuralError e) { throw e }
                    catch (AbortError e) { throw e }
                    catch (Throwable e) { if (i >= n) throw e; log("retry ${i}/${n} after: ${msg(e)}") }
                }
            case 'catchError': case 'warnError':
                String br = name == 'warnError' ? 'UNSTABLE' : (named.buildResult ?: 'FAILURE').toString()
                String sr = name == 'warnError' ? 'UNSTABLE' : (named.stageResult ?: br).toString()
                try { return withFrame('block', name) { body.call() } }
                catch (StructuralError e) { throw e }
                catch (AbortError e) { throw e }
                catch (Throwable e) {
                    errorsOut << [stage: curStageName(), message: msg(e), caught: name]
                    if (br && br != 'null') setResult(br)
                    if (sr && sr != 'null') setStageResult(sr)
                    return null
                }
            case 'unstable':
                setResult('UNSTABLE'); setStageResult('UNSTABLE')
                errorsOut << [stage: curStageName(), message: (pos ? pos[0] : named.message)?.toString(), unstable: true]
                return null
            case 'waitUntil':
                for (int i = 0; i < 100; i++) { if (DefaultTypeTransformation.castToBoolean(withFrame('block', 'waitUntil') { body.call() })) return null }
                throw new StepFailure("waitUntil: condition never became true (harness gives up after 100 tries)")
            case 'parallel':
                Map branches = named ?: [:]
                boolean ff = DefaultTypeTransformation.castToBoolean(branches.failFast)
                Throwable first = null
                branches.each { bn, bc ->
                    if (bn == 'failFast' || !(bc instanceof Closure)) return
                    if (ff && first != null) return
                    try { withFrame('block', 'parallel') { ((Closure) bc).call() } }
                    catch (StructuralError e) { throw e }
                    catch (Throwable e) { if (first == null) first = e }
                }
                if (first != null) throw first
                return null
            // descriptors (used as arguments)
            case 'sshUserPrivateKey': case 'usernamePassword': case 'usernameColonPassword': case 'certificate':
                return [binding: name] + named
            case 'file': case 'string':
                if (named.containsKey('credentialsId')) return [binding: name] + named
                return paramDescriptor(name, named)
            case 'booleanParam': case 'choice': case 'text': case 'password':
                return paramDescriptor(name, named)
            case 'logRotator': return [logRotator: plain(named)]
            case 'buildDiscarder': case 'disableConcurrentBuilds': case 'pipelineTriggers': case 'cron':
                return [(name): plain(pos ?: named)]
        }
        if (NOOP_STEPS.contains(name)) {
            log("step ${name} (recorded, not executed)")
            if (body != null) return withFrame('block', name) { body.call() }
            return null
        }
        throw new StepFailure("No such DSL method '${name}' found among steps known to the harness")
    }

    Object shStep(Map named, List pos) {
        def scriptV = pos ? pos[0] : named.script
        if (scriptV == null) throw new StepFailure("sh: missing script")
        String script = scriptV.toString()
        boolean rs = DefaultTypeTransformation.castToBoolean(named.returnStdout)
        boolean rst = DefaultTypeTransformation.castToBoolean(named.returnStatus)
        Map rec = [stage: curStageName(), script: script, label: named.label?.toString(), returnStdout: rs, returnStatus: rst,
                   timeouts: timeoutFrames.collect { it.label }]
        shOut << rec
        log("sh${rec.label ? ' (' + rec.label + ')' : ''}${runMode ? '' : ' [dry]'}: " + script.readLines().take(1).join('') + (script.readLines().size() > 1 ? ' ...' : ''))
        int exit = 0
        String out = ''
        if (!runMode) {
            if (failSh.any { script =~ it }) exit = 1
            def m = mockSh.find { script =~ it[0] }
            if (m != null) out = m[1]
        } else {
            def r = execSh(script, rs)
            exit = r[0]; out = r[1]
            if (r[2] != null) { rec.exitCode = exit; rec.stopped = true; throw (AbortError) r[2] }
        }
        rec.exitCode = exit
        if (rst) return exit
        if (exit != 0) throw new StepFailure("script returned exit code ${exit}")
        return rs ? out : null
    }

    List execSh(String script, boolean capture) {
        File d = new File(tmpDir, "durable-${UUID.randomUUID().toString().substring(0, 8)}")
        d.mkdirs()
        File f = new File(d, 'script.sh')
        f.setText(script, 'UTF-8')
        List<String> cmd
        if (script.startsWith('#!')) {
            f.setExecutable(true, true)
            cmd = [f.absolutePath]
        } else {
            cmd = ['sh', '-xe', f.absolutePath]
        }
        File wd = cwd()
        if (!wd.isDirectory()) throw new StepFailure("working directory does not exist: ${wd}")
        ProcessBuilder pb = new ProcessBuilder(cmd)
        pb.directory(wd)
        // A sh step's environment is the agent's own (its PATH, HOME, user and locale) plus what
        // Jenkins sets and binds, never the caller's whole environment (durable-task's
        // BourneShellScript runs with the build's EnvVars: an SSH_AUTH_SOCK or a ~/.ssh key of the
        // developer running the harness must not make a deploy pass).
        Map<String, String> penv = pb.environment()
        Map<String, String> agent = new HashMap<String, String>(penv)
        penv.clear()
        ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'TMPDIR', 'JAVA_HOME'].each { k ->
            if (agent[k] != null) penv.put(k, agent[k])
        }
        envFlat().each { k, v -> penv.put(k, v) }
        String cookie = UUID.randomUUID().toString()
        penv.put('BG_HARNESS_COOKIE', cookie)
        def (Map limitFrame, long limitAt) = nextLimit()
        if (limitFrame != null && System.currentTimeMillis() >= limitAt) {
            d.deleteDir()
            return [143, '', limitReached(limitFrame)]
        }
        Process p = pb.start()
        p.outputStream.close()
        ByteArrayOutputStream captured = new ByteArrayOutputStream()
        String tag = "[sh ${curStageName() ?: '-'}] "
        Thread tOut = Thread.start {
            if (capture) captured << p.inputStream
            else p.inputStream.eachLine('UTF-8') { System.err.println(tag + it) }
        }
        Thread tErr = Thread.start { p.errorStream.eachLine('UTF-8') { System.err.println(tag + it) } }
        AbortError stopped = null
        while (true) {
            (limitFrame, limitAt) = nextLimit()
            long wait = limitFrame == null ? 3600000L : limitAt - System.currentTimeMillis()
            if (p.waitFor(Math.max(wait, 1L), java.util.concurrent.TimeUnit.MILLISECONDS)) break
            if (limitFrame != null && System.currentTimeMillis() >= limitAt) {
                stopped = limitReached(limitFrame)
                killByCookie(cookie)
                p.waitFor()
                break
            }
        }
        int rc = p.exitValue()
        tOut.join(); tErr.join()
        d.deleteDir()
        return [rc, new String(captured.toByteArray(), 'UTF-8'), stopped]
    }

    Object doInput(Map named) {
        Map rec = [stage: curStageName(), message: plain(named.message), ok: plain(named.ok), id: plain(named.id),
                   submitter: plain(named.submitter), parameters: plain(named.parameters ?: []), action: inputAction,
                   executor: nodeAvailable]
        inputOut << rec
        log("input: ${rec.message} -> ${inputAction}")
        if (inputWaitMs > 0) {
            // The person takes this long to answer; a timeout around the input may fire first.
            def (Map f, long at) = nextLimit()
            long until = System.currentTimeMillis() + inputWaitMs
            if (f != null && at < until) {
                Thread.sleep(Math.max(at - System.currentTimeMillis(), 0L))
                throw limitReached(f)
            }
            Thread.sleep(inputWaitMs)
        }
        if (inputAction == 'abort') throw new AbortError("Rejected by user (input '${rec.message}')")
        if (inputAction == 'timeout') {
            // Nobody answers: the innermost timeout around the input fires (without the wait).
            if (timeoutFrames.isEmpty()) throw new StepFailure("input '${rec.message}' waits forever: no timeout around it")
            throw limitReached(timeoutFrames[-1])
        }
        List ps = (List) (named.parameters ?: [])
        if (ps.isEmpty()) return null
        Map vals = [:]
        ps.each { Map pd ->
            def v = pd.defaultValue
            if (pd.type == 'choice') v = pd.choices ? pd.choices[0] : null
            if (pd.type == 'booleanParam') v = v == null ? false : DefaultTypeTransformation.castToBoolean(v)
            vals[pd.name] = v
        }
        return vals.size() == 1 ? vals.values().iterator().next() : vals
    }

    // ---------------------------------------------------------------- credentials
    Set<String> dummyIds = [] as Set

    String lookupCred(String id) {
        if (creds.containsKey(id)) return creds[id]
        if (dummyCreds) {
            File f = new File(tmpDir, "dummy-cred-${id}")
            f.text = "dummy-secret-for-${id}\n"
            creds[id] = f.path
            dummyIds << id
            return f.path
        }
        throw new StepFailure("Could not find credentials entry with ID '${id}'")
    }

    File secretCopy(String id) {
        File src = new File(lookupCred(id))
        File d = new File(tmpDir, "secretFiles-${UUID.randomUUID()}")
        d.mkdirs()
        File f = new File(d, src.name)
        Files.copy(src.toPath(), f.toPath())
        Files.setPosixFilePermissions(f.toPath(), [PosixFilePermission.OWNER_READ] as Set)
        f
    }

    // Credential types, as Jenkins keeps them: each credential is of one kind, and a binding finds
    // only its own kind (credentials-binding's MultiBinding.getCredentials looks the id up by the
    // binding's credential class and fails "Credentials 'ID' is of type ... where ... was
    // expected"). A --cred's kind is --cred-type's, else what its file holds: a private key is an
    // "SSH Username with private key", a file with --cred-user a "Username with password",
    // anything else a "Secret file". A "Secret text" is only ever one given --cred-type ID=string.
    static final Map<String, String> CRED_KINDS = [sshUserPrivateKey: 'SSH Username with private key',
                                                   file: 'Secret file', string: 'Secret text',
                                                   usernamePassword: 'Username with password']
    static final Map<String, String> BINDING_KIND = [sshUserPrivateKey: 'sshUserPrivateKey', file: 'file',
                                                     string: 'string', usernamePassword: 'usernamePassword',
                                                     usernameColonPassword: 'usernamePassword']

    String credKind(String id) {
        if (credTypes.containsKey(id)) return credTypes[id]
        String path = lookupCred(id)
        String head = new File(path).getText('UTF-8').readLines().find { it.trim() } ?: ''
        if (head ==~ /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/) return 'sshUserPrivateKey'
        if (credUsers.containsKey(id)) return 'usernamePassword'
        return 'file'
    }

    void requireKind(String id, String binding) {
        String want = BINDING_KIND[binding]
        if (want == null || dummyIds.contains(id)) return
        String kind = credKind(id)
        if (kind == want) return
        String extra = ''
        if (want == 'sshUserPrivateKey') extra = ' (its file holds no private key)'
        throw new StepFailure("Credentials '${id}' is of type '${CRED_KINDS[kind]}' where '${CRED_KINDS[want]}' was expected${extra}")
    }

    Object withCredentials(List bindings, Closure body) {
        Map<String, String> layer = [:]
        List<File> temps = []
        try {
            bindings.each { b ->
                if (!(b instanceof Map) || !((Map) b).binding) throw new StepFailure("withCredentials: invalid binding ${b}")
                Map m = (Map) b
                String id = m.credentialsId?.toString()
                if (!id) throw new StepFailure("withCredentials: ${m.binding} requires credentialsId")
                lookupCred(id)
                requireKind(id, m.binding.toString())
                switch (m.binding) {
                    case 'sshUserPrivateKey':
                        if (!m.keyFileVariable) throw new StepFailure("sshUserPrivateKey requires keyFileVariable")
                        if (!dummyIds.contains(id) && credTypes[id] == 'sshUserPrivateKey') {
                            // Declared an SSH key: its file must hold one.
                            String head = new File(lookupCred(id)).getText('UTF-8').readLines().find { it.trim() } ?: ''
                            if (!(head ==~ /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/))
                                throw new StepFailure("--cred-type ${id}=sshUserPrivateKey: its file holds no private key")
                        }
                        File f = secretCopy(id); temps << f
                        layer[m.keyFileVariable.toString()] = f.path
                        if (m.usernameVariable) layer[m.usernameVariable.toString()] = credUsers[id] ?: 'jenkins'
                        if (m.passphraseVariable) layer[m.passphraseVariable.toString()] = credPass[id] ?: ''
                        break
                    case 'file':
                        if (!m.variable) throw new StepFailure("file binding requires variable")
                        File f = secretCopy(id); temps << f
                        layer[m.variable.toString()] = f.path
                        break
                    case 'string':
                        if (!m.variable) throw new StepFailure("string binding requires variable")
                        layer[m.variable.toString()] = new File(lookupCred(id)).getText('UTF-8').replaceAll(/\r?\n\z/, '')
                        break
                    case 'usernamePassword':
                        layer[m.usernameVariable.toString()] = credUsers[id] ?: 'jenkins'
                        layer[m.passwordVariable.toString()] = new File(lookupCred(id)).getText('UTF-8').replaceAll(/\r?\n\z/, '')
                        break
                    case 'usernameColonPassword':
                        layer[m.variable.toString()] = (credUsers[id] ?: 'jenkins') + ':' + new File(lookupCred(id)).getText('UTF-8').replaceAll(/\r?\n\z/, '')
                        break
                    default:
                        throw new StepFailure("withCredentials: unsupported binding ${m.binding}")
                }
                credentialsOut << id
                credentialBindingsOut << [id: id, type: m.binding, stage: curStageName(),
                                          variables: (Map) plain(m.findAll { k, v -> k.toString().endsWith('Variable') || k == 'variable' })]
            }
            return withEnvLayer(layer) { withFrame('block', 'withCredentials') { body.call() } }
        } finally {
            temps.each { File f -> f.setWritable(true); f.delete(); f.parentFile.delete() }
        }
    }

    Object envCredentials(Object[] args) {
        def (Map named, List pos, Closure body) = splitArgs(args)
        String id = pos ? pos[0].toString() : null
        if (id == null) throw new StepFailure("credentials() requires an id")
        File f = secretCopy(id)   // kept until the end of the run (tmpDir is removed)
        credentialsOut << id
        credentialBindingsOut << [id: id, type: 'environment', stage: curStageName()]
        if (credUsers.containsKey(id)) {
            // the variable name being assigned is unknown here; _USR/_PSW are added by the assignment hook below
            pendingCredUser = [user: credUsers[id], pass: credPass[id] ?: '']
        }
        return f.path
    }
    Map pendingCredUser

    Map resultJson() {
        [result: buildResult, stages: stagesOut, sh: shOut, slack: slackOut, echo: echoOut,
         credentials: credentialsOut, credentialBindings: credentialBindingsOut, options: optionsOut,
         parameters: parametersOut, params: plain(params), tools: toolsOut, agent: agentOut, triggers: triggersOut,
         input: inputOut, post: postOut, steps: stepsOut, errors: errorsOut, files: filesOut,
         env: envBase, run: runMode, agents: agentsOut, stashes: stashesOut]
    }
}

// ==================================================================== main
def usage = '''\
usage: groovy tests/groovy/harness.groovy [options] Jenkinsfile
  --run                   execute sh steps (default: record only; sh returns "" / 0)
  --env K=V               initial env var (repeatable); nothing else is inherited into `env`
  --cred ID=PATH          credential file for ID (repeatable)
  --cred-user ID=NAME     username for sshUserPrivateKey/usernamePassword ID (default jenkins)
  --cred-pass ID=PASS     passphrase bound to passphraseVariable (default empty)
  --cred-type ID=TYPE     the credential's kind: sshUserPrivateKey, file, string or usernamePassword
                          (default: sshUserPrivateKey for a private key, usernamePassword with
                          --cred-user, else file); a binding of another kind fails
  --dummy-creds           unknown credential ids bind to a dummy secret instead of failing
  --param K=V             build parameter (repeatable); true/false become booleans
  --first-build           do not apply declared parameter defaults (params only from --param)
  --workspace DIR         the checkout: the top-level agent's workspace; each stage agent's
                          fresh workspace starts as a copy of it (default: current dir)
  --abort-at-stage NAME   simulate an abort/timeout when stage NAME starts (result ABORTED)
  --input proceed|abort|timeout
                          answer to input steps (default proceed; timeout: nobody answers, the
                          timeout around the input fires)
  --timeout-grace SECS    how long a timed-out body may still run (Jenkins: 60)
  --input-wait SECS       how long the person takes to answer an input
  --previous-result R     result of the "previous build" (for changed/fixed/regression)
  --mock-sh REGEX=OUT     dry mode: sh whose script matches REGEX returns OUT as stdout
  --fail-sh REGEX         dry mode: sh whose script matches REGEX exits 1
  --fail-step NAME        the step NAME throws (slackSend: a Slack outage)
  --result-file FILE      write the JSON result to FILE
  --quiet                 less logging on stderr
  --library DIR           a Jenkins shared library folder: its vars/NAME.groovy become steps
exit: 0 evaluated (see result), 2 usage, 3 compile error, 4 structural error
'''

Interp interp = new Interp()
String resultFile = null
String jenkinsfile = null
List<File> libraries = []
int code = 0

def kv = { String opt, String v ->
    if (v == null) throw new UsageError("${opt} requires a value")
    int i = v.indexOf('=')
    if (i <= 0) throw new UsageError("${opt} expects K=V, got '${v}'")
    [v.substring(0, i), v.substring(i + 1)]
}

def writeResult = { Map m ->
    if (resultFile != null) new File(resultFile).setText(JsonOutput.prettyPrint(JsonOutput.toJson(Interp.plain(m))), 'UTF-8')
}

try {
    List<String> a = (args as List<String>)
    int i = 0
    def next = { String opt -> if (i + 1 >= a.size()) throw new UsageError("${opt} requires a value"); a[++i] }
    while (i < a.size()) {
        String o = a[i]
        switch (o) {
            case '--run': interp.runMode = true; break
            case '--env': def (k, v) = kv(o, next(o)); interp.initialEnv[k] = v; break
            case '--cred':
                def (k, v) = kv(o, next(o))
                if (!new File(v).isFile()) throw new UsageError("--cred ${k}: file not found: ${v}")
                interp.creds[k] = new File(v).absolutePath; break
            case '--cred-user': def (k, v) = kv(o, next(o)); interp.credUsers[k] = v; break
            case '--cred-pass': def (k, v) = kv(o, next(o)); interp.credPass[k] = v; break
            case '--cred-type':
                def (k, v) = kv(o, next(o))
                if (!Interp.CRED_KINDS.containsKey(v)) throw new UsageError("--cred-type ${k}: one of ${Interp.CRED_KINDS.keySet().join(', ')}, not '${v}'")
                interp.credTypes[k] = v; break
            case '--dummy-creds': interp.dummyCreds = true; break
            case '--param': def (k, v) = kv(o, next(o)); interp.cliParams[k] = v; break
            case '--first-build': interp.firstBuild = true; break
            case '--workspace':
                File w = new File(next(o))
                if (!w.isDirectory()) throw new UsageError("--workspace: not a directory: ${w}")
                interp.workspace = w.canonicalFile; break
            case '--abort-at-stage': interp.abortAtStage = next(o); break
            case '--timeout-grace': interp.timeoutGraceMs = (next(o) as long) * 1000L; break
            case '--input-wait': interp.inputWaitMs = (next(o) as long) * 1000L; break
            case '--input':
                interp.inputAction = next(o)
                if (!(interp.inputAction in ['proceed', 'abort', 'timeout'])) throw new UsageError("--input must be proceed, abort or timeout")
                break
            case '--previous-result':
                interp.previousResult = next(o).toUpperCase()
                if (!(interp.previousResult in Interp.RESULT_ORDER)) throw new UsageError("--previous-result must be one of ${Interp.RESULT_ORDER}")
                break
            case '--mock-sh': def (k, v) = kv(o, next(o)); interp.mockSh << [k, v]; break
            case '--fail-sh': interp.failSh << next(o); break
            case '--fail-step': interp.failSteps << next(o); break
            case '--result-file': resultFile = next(o); break
            case '--quiet': interp.quiet = true; break
            case '--library':
                File l = new File(next(o))
                if (!new File(l, 'vars').isDirectory()) throw new UsageError("--library: no vars/ folder in ${l}")
                libraries << l.canonicalFile; break
            case '-h': case '--help': System.out.print(usage); System.exit(0); break
            default:
                if (o.startsWith('-')) throw new UsageError("unknown option ${o}")
                if (jenkinsfile != null) throw new UsageError("only one Jenkinsfile may be given")
                jenkinsfile = o
        }
        i++
    }
    if (jenkinsfile == null) throw new UsageError("missing Jenkinsfile argument")
    if (!new File(jenkinsfile).isFile()) throw new UsageError("Jenkinsfile not found: ${jenkinsfile}")
} catch (UsageError e) {
    System.err.println("harness: ${e.message}")
    System.err.print(usage)
    System.exit(2)
}

String text = new File(jenkinsfile).getText('UTF-8')
if (libraries) {
    // `@Library('name') _` loads a shared library in Jenkins; here --library provides it.
    text = text.readLines().collect { it ==~ /\s*@Library\(.*\)\s*_\s*/ ? '' : it }.join('\n')
}
PipelineBinding binding = new PipelineBinding(interp: interp)
interp.binding = binding
interp.envObj = new EnvObj(interp: interp)
interp.currentBuild = new CurrentBuild(interp: interp)
// What Jenkins itself sets for every build (core's Run.getEnvironment, EnvVars): the job, the
// build, the workspace; --env adds to or overrides them (BRANCH_NAME / GIT_BRANCH only as the job
// type gives them: a multibranch job, or a checkout from SCM).
String job = interp.initialEnv.JOB_NAME ?: 'bluegreen-job'
String number = interp.initialEnv.BUILD_NUMBER ?: '1'
interp.envBase.putAll([JOB_NAME: job, JOB_BASE_NAME: job.tokenize('/')[-1], BUILD_NUMBER: number, BUILD_ID: number,
                       BUILD_TAG: "jenkins-${job.replace('/', '-')}-${number}".toString(),
                       BUILD_URL: "http://jenkins.invalid/job/${job}/${number}/".toString(),
                       JENKINS_URL: 'http://jenkins.invalid/', NODE_NAME: 'built-in',
                       WORKSPACE: interp.workspace.absolutePath])
interp.envBase.putAll(interp.initialEnv)
Interp.current = interp

CompilerConfiguration cfg = new CompilerConfiguration()
cfg.scriptBaseClass = JenkinsfileScript.name
GroovyShell shell = new GroovyShell(this.class.classLoader, binding, cfg)
Script script
try {
    // Shared library globals (vars/NAME.groovy with `def call(...)`) become steps named NAME.
    libraries.each { File lib ->
        new File(lib, 'vars').listFiles().findAll { it.name.endsWith('.groovy') }.sort().each { File f ->
            Script global = shell.parse(f.getText('UTF-8'), f.name.replace('.groovy', ''))
            global.binding = binding
            binding.setVariable(f.name.replace('.groovy', ''), { Object... a -> global.invokeMethod('call', a) })
        }
    }
    script = shell.parse(text, 'WorkflowScript')
} catch (Throwable e) {
    System.err.println("harness: compile error:\n${e.message}")
    writeResult([result: null, error: [kind: 'compile', message: e.message]])
    System.out.println("COMPILE ERROR")
    System.exit(3)
}

interp.tmpDir = Files.createTempDirectory('jenkins-harness').toFile()
try {
    try {
        script.run()
        if (!interp.pipelineSeen) throw new StructuralError("No pipeline { } block found")
    } catch (StructuralError e) {
        throw e
    } catch (AbortError e) {
        interp.setResult('ABORTED'); interp.errorsOut << [stage: null, message: e.message]
    } catch (Throwable e) {
        interp.setResult('FAILURE'); interp.errorsOut << [stage: null, message: Interp.msg(e)]
    }
    writeResult(interp.resultJson())
    System.out.println("RESULT: ${interp.buildResult}")
} catch (StructuralError e) {
    System.err.println("harness: structural error: ${e.message}")
    writeResult([result: null, error: [kind: 'structure', message: e.message]])
    System.out.println("STRUCTURAL ERROR: ${e.message}")
    code = 4
} finally {
    interp.tmpDir.eachFileRecurse { it.setWritable(true) }
    interp.tmpDir.deleteDir()
}
System.exit(code)
