from services.naming import EXPOSED_NAME, exposed_tool_name, server_name_problem


def test_plain_names_join_with_the_separator() -> None:
    assert exposed_tool_name("filesystem", "read_file", "_") == "filesystem_read_file"
    assert exposed_tool_name("filesystem", "read_file", "-") == "filesystem-read_file"


def test_names_clients_would_reject_are_shortened_deterministically() -> None:
    long_tool = "t" * 80
    name = exposed_tool_name("docs", long_tool, "_")
    assert len(name) == 64
    assert EXPOSED_NAME.fullmatch(name)
    assert name == exposed_tool_name("docs", long_tool, "_")
    assert name != exposed_tool_name("docs", long_tool + "x", "_")


def test_invalid_characters_are_replaced_and_disambiguated() -> None:
    dotted = exposed_tool_name("git", "log.show", "_")
    slashed = exposed_tool_name("git", "log/show", "_")
    assert EXPOSED_NAME.fullmatch(dotted) and EXPOSED_NAME.fullmatch(slashed)
    assert dotted.startswith("git_log_show_")
    assert dotted != slashed


def test_server_names_must_not_contain_the_separator() -> None:
    assert server_name_problem("file_system", "_") is not None
    assert server_name_problem("file-system", "_") is None
    assert server_name_problem("file-system", "-") is not None
    assert server_name_problem("bad name", "_") is not None
    assert server_name_problem("x" * 41, "_") is not None
