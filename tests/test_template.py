"""Chat templates: real-world idioms render; hostile templates are stopped in the sandbox."""

from __future__ import annotations

import datetime
from pathlib import Path

import jinja2
import pytest

from ridgeline_core.errors import TemplateError
from ridgeline_core.runtime import ChatMessage
from ridgeline_core.runtime.template import ChatTemplate

CHATML = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

CONVERSATION = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Capital of France?"),
    ChatMessage("assistant", "Paris."),
    ChatMessage("user", "And Italy?"),
]


def test_renders_chatml_with_generation_prompt() -> None:
    template = ChatTemplate(CHATML, bos_token="<s>", eos_token="</s>")
    assert template.render(CONVERSATION) == (
        "<s>"
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd Italy?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_renders_without_generation_prompt() -> None:
    template = ChatTemplate(CHATML)
    out = template.render([ChatMessage("user", "hi")], add_generation_prompt=False)
    assert out == "<|im_start|>user\nhi<|im_end|>\n"


def test_eos_token_and_block_whitespace_control() -> None:
    source = """{% for m in messages %}
{% if m.role == 'assistant' %}
{{ m.content }}{{ eos_token }}
{% else %}
[{{ m.role }}] {{ m.content }}
{% endif %}
{% endfor %}"""
    template = ChatTemplate(source, eos_token="</s>")
    out = template.render(
        [ChatMessage("user", "q"), ChatMessage("assistant", "a")], add_generation_prompt=False
    )
    assert out == "[user] q\na</s>\n"  # trim_blocks/lstrip_blocks drop the tag lines


def test_common_hugging_face_idioms_work() -> None:
    source = (
        "{% set ns = namespace(system='') %}"
        "{% if messages[0]['role'] == 'system' %}{% set ns.system = messages[0]['content'] %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}"
        "{% endif %}"
        "SYS={{ ns.system | trim }}|"
        "{% for m in loop_messages %}"
        "{% if loop.index > 2 %}{% break %}{% endif %}"
        "{{ m['content'].strip().upper() }}{% if not loop.last %},{% endif %}"
        "{% endfor %}|{{ messages | length }}|{{ messages[0] | tojson }}"
    )
    out = ChatTemplate(source).render(
        [
            ChatMessage("system", "  Be brief.  "),
            ChatMessage("user", " q1 "),
            ChatMessage("assistant", "a1"),
            ChatMessage("user", "q2"),
        ]
    )
    assert out == 'SYS=Be brief.|Q1,A1,|4|{"role": "system", "content": "  Be brief.  "}'


def test_tojson_keeps_non_ascii() -> None:
    out = ChatTemplate("{{ messages | tojson }}").render([ChatMessage("user", "été")])
    assert out == '[{"role": "user", "content": "été"}]'


def test_strftime_now_is_available() -> None:
    out = ChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert out in {str(datetime.date.today().year), str(datetime.date.today().year + 1)}


def test_raise_exception_becomes_template_error() -> None:
    source = (
        "{% if messages[0].role != 'system' %}"
        "{{ raise_exception('Conversation must start with a system message') }}"
        "{% endif %}ok"
    )
    template = ChatTemplate(source)
    assert template.render([ChatMessage("system", "s")]) == "ok"
    with pytest.raises(TemplateError, match="must start with a system message"):
        template.render([ChatMessage("user", "u")])


@pytest.mark.parametrize(
    "source", ["{% for m in messages %}", "{% if %}", "{{ messages[ }}", "{% endfor %}", "{{ }}"]
)
def test_syntax_error_is_template_error(source: str) -> None:
    with pytest.raises(TemplateError, match="does not parse"):
        ChatTemplate(source)


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages[5].content.strip() }}",  # undefined
        "{{ 1 / 0 }}",
        "{{ messages[0].content + 1 }}",
        "{{ nosuchfunction() }}",
    ],
)
def test_runtime_failures_are_template_errors(source: str) -> None:
    with pytest.raises(TemplateError, match="chat template failed"):
        ChatTemplate(source).render([ChatMessage("user", "x")])


def test_template_error_is_a_model_error() -> None:
    with pytest.raises(TemplateError) as info:
        ChatTemplate("{{ raise_exception('no') }}").render([])
    assert info.value.kind == "template"


# -- hostile templates ----------------------------------------------------------------

# Each would run `touch MARKER` outside a sandbox (checked below with a plain Environment).
# popen(...).close() rather than .read(): the same escape, without leaking a pipe.
COMMAND_PAYLOADS = {
    "cycler-globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').close() }}",
    "joiner-globals": "{{ joiner.__init__.__globals__.os.system('touch MARKER') }}",
    "lipsum-globals": "{{ lipsum.__globals__['os'].popen('touch MARKER').close() }}",
    "namespace-globals": "{{ namespace.__init__.__globals__.os.popen('touch MARKER').close() }}",
    "self-builtins": (
        "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch MARKER') }}"
    ),
    "subclasses-walk": (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
        "{% if c.__name__ == 'catch_warnings' %}"
        "{{ c.__init__.__globals__['sys'].modules['os'].system('touch MARKER') }}"
        "{% endif %}{% endfor %}"
    ),
    "attr-filter": (
        "{{ (cycler | attr('__init__') | attr('__globals__'))['os']"
        ".popen('touch MARKER').close() }}"
    ),
}


def payload(name: str, marker: Path) -> str:
    return COMMAND_PAYLOADS[name].replace("MARKER", str(marker))


@pytest.mark.parametrize("name", sorted(COMMAND_PAYLOADS))
def test_payload_really_runs_a_command_outside_the_sandbox(name: str, tmp_path: Path) -> None:
    """Control: the payloads are live, so the sandbox test below means something."""
    marker = tmp_path / f"unsandboxed-{name}"
    jinja2.Environment().from_string(payload(name, marker)).render()
    assert marker.exists()


@pytest.mark.parametrize("name", sorted(COMMAND_PAYLOADS))
def test_command_payloads_are_stopped(name: str, tmp_path: Path) -> None:
    marker = tmp_path / f"sandboxed-{name}"
    with pytest.raises(TemplateError):
        ChatTemplate(payload(name, marker)).render([ChatMessage("user", "hi")])
    assert not marker.exists()


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ raise_exception.__globals__['os'] }}",
        "{{ strftime_now.__globals__['__builtins__'] }}",
        "{{ (1).__class__.__name__ }}",
        "{{ '{0.__class__.__mro__}'.format(1) }}",
        "{{ messages.__class__.__base__.__subclasses__() }}",
        "{% for x in range(10**9) %}{% endfor %}",
    ],
)
def test_escape_attempts_are_template_errors(source: str) -> None:
    with pytest.raises(TemplateError):
        ChatTemplate(source).render([ChatMessage("user", "hi")])


@pytest.mark.parametrize(
    "source",
    [
        "{{ messages.append(1) }}",
        "{{ messages.clear() }}",
        "{{ messages.pop() }}",
        "{{ messages.insert(0, 1) }}",
        "{{ messages.extend([1]) }}",
        "{{ messages.sort() }}",
        "{{ messages[0].update({'role': 'system'}) }}",
        "{{ messages[0].clear() }}",
        "{{ messages[0].setdefault('x', 1) }}",
        "{% set d = {} %}{{ d.update({'a': 1}) }}",
    ],
)
def test_mutation_is_refused(source: str) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        ChatTemplate(source).render([ChatMessage("user", "hi")])


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ (1).__class__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ '' | attr('__class__') | attr('__mro__') }}",
        "{{ cycler.__init__ }}",
    ],
)
def test_single_unsafe_hop_leaks_nothing(source: str) -> None:
    """One unsafe attribute is undefined (renders empty or raises), never the real object."""
    try:
        out = ChatTemplate(source).render([])
    except TemplateError:
        return
    assert out == ""


def test_template_does_not_change_the_messages() -> None:
    messages = [ChatMessage("user", "hi")]
    source = "{% set m = messages[0] %}{% set m.role = 'system' %}"
    with pytest.raises(TemplateError):
        ChatTemplate(source).render(messages)
    assert messages == [ChatMessage("user", "hi")]


@pytest.mark.parametrize(
    "source",
    [
        # CVE-2024-56326: str.format reached indirectly
        "{% set f = '{0.__class__.__mro__}'.format %}{{ f(1) }}",
        # CVE-2025-27516: the format method fetched through the attr filter
        "{{ ('{0.__class__.__mro__}' | attr('format'))(1) }}",
    ],
)
def test_format_string_escapes_fixed_in_jinja_3_1_6_are_stopped(source: str) -> None:
    with pytest.raises(TemplateError, match="unsafe"):
        ChatTemplate(source).render([ChatMessage("user", "hi")])
