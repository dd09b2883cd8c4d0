import pytest, time
from tests.labeling.test_import_jobs import *
@pytest.mark.django_db
def test_dbg(staff_client, project, tmp_path, var_dir):
    with use_broker(CLOSED_PORT, {"max_retries": 0, "socket_connect_timeout": 1, "socket_timeout": 1}):
        response = post_upload(staff_client, pairs(3), follow=True)
    print(response.status_code, response.redirect_chain, response.headers)
